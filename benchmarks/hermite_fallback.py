"""Depth-3 tanh network (a Hermite-method dual) at n = 4000: wall time of K(X, X), NNGP and NTK.

    python benchmarks/hermite_fallback.py                       # this tree
    python benchmarks/hermite_fallback.py --compare /tmp/old    # this tree and another checkout,
                                                                # alternating in fresh processes
    python benchmarks/hermite_fallback.py --accuracy [NAME ...]  # k, k̇ vs tests/hermite_oracle.py

Network dc.serial(Dense(1.5, 0.1), tanh, Dense(1.5, 0.1), tanh, Dense(1.5, 0.1), tanh,
Dense(1.5, 0.1)); X ~ N(0, 1) of shape 4000 × 10, float64; ``kernel(X, backend="numba")``.
One warm-up call (Numba compilation, Hermite tables) is excluded; the figure is the median of
``--repeats`` timed calls.  With ``--compare`` each tree runs in its own process, in turns
(``--rounds``), so both see the same machine load; the ratio of the medians is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(n: int, repeats: int) -> dict:
    import numpy as np

    import dualcalc as dc

    net = dc.serial(dc.Dense(1.5, 0.1), "tanh", dc.Dense(1.5, 0.1), "tanh", dc.Dense(1.5, 0.1), "tanh",
                    dc.Dense(1.5, 0.1))
    X = np.random.default_rng(0).normal(size=(n, 10))
    net.kernel(X, backend="numba")
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        net.kernel(X, backend="numba")
        times.append(time.perf_counter() - t)
    return {"tree": str(Path(dc.__file__).resolve().parents[1]), "median_s": statistics.median(times),
            "times": times}


def accuracy(names: list[str]) -> None:
    """Max relative error of k and k̇ against tests/hermite_oracle.py (an independent 2-D
    Gauss–Legendre quadrature) on the grid of tests/test_hermite_accuracy.py::test_full_grid,
    beside the dual's own stated bound (error_estimates)."""
    import warnings

    import numpy as np

    import dualcalc as dc

    sys.path.insert(0, str(ROOT / "tests"))
    import hermite_oracle as O

    qs = [0.01, 0.05, 0.5, 1.0, 5.0, 30.0, 100.0]
    pairs = [(q, q) for q in qs] + list(zip(qs[:-1], qs[1:])) + [(0.01, 100.0)]
    rhos = [-1.0, -0.99, -0.5, 0.0, 0.5, 0.9, 0.99, 0.999, 1.0]
    pts = [(a, b, r) for a, b in pairs for r in rhos if not (abs(r) <= 0.5 and min(a, b) >= 30 and r != 0.5)]
    print(f"{len(pts)} points: q in {qs}, pairs q1 = q2 and neighbours and (0.01, 100), rho in {rhos}")
    print("| activation | max rel err k | max rel err k̇ | stated bound (nngp, ntk) | degree | time s |")
    print("|---|---|---|---|---|---|")
    for name in names:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            act = dc.activation(O.ACTIVATIONS[name][0])
            q1, q2, r = (np.array(v, dtype=float) for v in zip(*pts))
            c = r * np.sqrt(q1 * q2)
            k, t = act.nngp(q1, q2, c), act.ntk(q1, q2, c)
            est = act.dual.error_estimates
        ref = np.array([O.k_and_kdot(name, *p) for p in pts])
        sc = np.array([O.scales(name, a, b) for a, b in zip(q1, q2)])
        ek = np.max(np.abs(k - ref[:, 0]) / sc[:, 0])
        et = np.max(np.abs(t - ref[:, 1]) / sc[:, 1])
        print(f"| {name} | {ek:.1e} | {et:.1e} | {est['nngp']:.1e}, {est['ntk']:.1e} | {act.dual.degree} | "
              f"{time.perf_counter() - t0:.0f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--compare", type=str, default=None, help="another checkout to time in turns")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--accuracy", nargs="*", default=None, metavar="NAME",
                    help="instead: accuracy vs the oracle of tests/hermite_oracle.py (default: all its activations)")
    a = ap.parse_args()
    if a.accuracy is not None:
        sys.path.insert(0, str(ROOT / "tests"))
        import hermite_oracle as O

        accuracy(a.accuracy or list(O.ACTIVATIONS))
        return
    if a.child or a.compare is None:
        print(json.dumps(one(a.n, a.repeats)))
        return
    res: dict[str, list[float]] = {"this": [], "other": []}
    for _ in range(a.rounds):
        for which, tree in (("this", ROOT), ("other", Path(a.compare).resolve())):
            env = dict(os.environ, PYTHONPATH=str(tree))
            out = subprocess.run([sys.executable, __file__, "--child", "--n", str(a.n), "--repeats", str(a.repeats)],
                                 env=env, capture_output=True, text=True, check=True, cwd=str(tree))
            r = json.loads(out.stdout.strip().splitlines()[-1])
            assert Path(r["tree"]) == tree, (r["tree"], tree)
            res[which] += r["times"]
            print(f"{which:5s} {tree}: median {r['median_s']:.3f} s", flush=True)
    mt, mo = statistics.median(res["this"]), statistics.median(res["other"])
    print(f"n = {a.n}: this tree {mt:.3f} s, other {mo:.3f} s, ratio this/other = {mt / mo:.3f}")


if __name__ == "__main__":
    main()
