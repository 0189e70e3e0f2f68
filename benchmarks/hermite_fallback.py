"""Depth-3 tanh network (a Hermite-method dual) at n = 4000: wall time of K(X, X), NNGP and NTK.

    python benchmarks/hermite_fallback.py                       # this tree
    python benchmarks/hermite_fallback.py --compare /tmp/old    # this tree and another checkout,
                                                                # alternating in fresh processes

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--compare", type=str, default=None, help="another checkout to time in turns")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
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
