"""Scaling of KernelSketch.fit_transform with n, against the exact kernel.

d = 100, depth 2 (serial(Dense(1, 0.5), ReLU, Dense(1, 0.5), ReLU, Dense(1, 0.5))), NTK,
n_components m = 4096, degree 4 per layer (fixed, so every n runs the same sketch), float32 input.
The exact kernel is ``net.kernel(X, get="ntk", backend="numba", dtype=float32)`` — the NTK only,
in float32: at n = 50 000 both float64 matrices would need 40 GB, the float32 NTK alone 10 GB.

Run:  python benchmarks/sketch_scaling.py            (sketch n = 1e3 … 1e5, exact n ≤ 10 000)
      python benchmarks/sketch_scaling.py --exact 50000   (adds one exact measurement; slow)
Writes benchmarks/results/sketch_scaling.md (measurements are kept in sketch_scaling.json, so
the slow exact run can be made separately and merged).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

import dualcalc as dc

RES = Path(__file__).resolve().parent / "results"
OUT = RES / "sketch_scaling.md"
STORE = RES / "sketch_scaling.json"
M, D, DEGREE = 4096, 100, 4
NS_SKETCH = [1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000]
NS_EXACT = [1000, 2000, 5000, 10_000]


def net():
    return dc.serial(dc.Dense(1.0, 0.5), dc.activation("relu"), dc.Dense(1.0, 0.5), dc.activation("relu"),
                     dc.Dense(1.0, 0.5))


def data(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, D)) * rng.uniform(0.5, 2.0, (n, 1))).astype(np.float32)


def time_sketch(n, repeats=1):
    X = data(n)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dc.KernelSketch(net(), M, kernel="ntk", degree=DEGREE, random_state=0).fit_transform(X)
        ts.append(time.perf_counter() - t0)
    return min(ts)


def time_exact(n):
    X = data(n)
    t0 = time.perf_counter()
    k = net().kernel(X, get="ntk", backend="numba", dtype=np.float32)
    t = time.perf_counter() - t0
    del k
    return t


def load():
    return json.loads(STORE.read_text()) if STORE.exists() else {"sketch": {}, "exact": {}}


def write(res):
    sk = {int(k): v for k, v in res["sketch"].items()}
    ex = {int(k): v for k, v in res["exact"].items()}
    ns = sorted(sk)
    slope = float(np.polyfit(np.log(ns), np.log([sk[n] for n in ns]), 1)[0]) if len(ns) > 1 else float("nan")
    big = [n for n in ns if n >= 10_000]
    slope_big = float(np.polyfit(np.log(big), np.log([sk[n] for n in big]), 1)[0]) if len(big) > 1 else float("nan")
    lines = ["# KernelSketch scaling", "",
             f"d = {D}, depth 2 (Dense(1, 0.5), ReLU, Dense(1, 0.5), ReLU, Dense(1, 0.5)), NTK, m = {M}, "
             f"degree {DEGREE} per layer, float32 input (single-precision sketch).  Exact: "
             "`net.kernel(X, get='ntk', backend='numba', dtype=float32)` (NTK only, float32: the two float64 "
             "matrices at n = 50 000 would need 40 GB; the float32 NTK alone is 10 GB).", "",
             f"Machine: {platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} cores, "
             "**shared with other jobs (load average 8–10 during the runs)**: absolute times are inflated and "
             "noisy; ratios measured in the same period.", "",
             "Sketch times are the minimum of 3 runs (n ≤ 20 000), 2 (n = 50 000) or 1 (n = 100 000); exact times one run.", "",
             "| n | sketch fit_transform (s) | per point (ms) | exact NTK (s) | exact / sketch |",
             "|---|---|---|---|---|"]
    for n in sorted(set(ns) | set(ex)):
        s = sk.get(n)
        e = ex.get(n)
        lines.append(f"| {n} | {s:.2f} | {1e3 * s / n:.3f} | " if s is not None else f"| {n} | – | – | ")
        lines[-1] += (f"{e:.2f} | " if e is not None else "– | ") + (f"{e / s:.2f} |" if (e and s) else "– |")
    lines += ["", f"Log–log slope of sketch time vs n: {slope:.3f} over all n, {slope_big:.3f} for n ≥ 10 000 "
              "(1 = linear).", ""]
    # crossover: exact time ~ a n², sketch ~ b n (fit on the measured points)
    common = sorted(set(sk) & set(ex))
    if common:
        a = np.median([ex[n] / n**2 for n in common])
        b = np.median([sk[n] / n for n in ns if n >= 5000] or [sk[n] / n for n in ns])
        cross = b / a
        meas = [n for n in common if ex[n] > sk[n]]
        lines += [f"Crossover (exact = sketch): the fitted curves exact ≈ {a:.3g}·n² s and sketch ≈ {b:.3g}·n s "
                  f"cross at n ≈ {cross:,.0f}; measured: the sketch is faster from n = {min(meas)} on"
                  if meas else f"Crossover from the fitted curves: n ≈ {cross:,.0f} (the sketch was slower at every "
                  "measured n with an exact time).", ""]
        if 50_000 in ex and 50_000 in sk:
            lines.append(f"Speed-up at n = 50 000 (measured): {ex[50_000] / sk[50_000]:.1f}×.")
        elif 50_000 in sk:
            lines.append(f"Speed-up at n = 50 000: exact not measured in this run; the n² fit predicts "
                         f"{a * 50_000**2:.0f} s, i.e. {a * 50_000**2 / sk[50_000]:.1f}× (extrapolated).")
    lines.append("")
    for note in res.get("notes", []):
        lines += [note, ""]
    lines.append(f"Peak resident memory of the benchmark process: {res.get('maxrss_mb', 0):.0f} MB "
                 "(includes the 10 GB float32 exact NTK at n = 50 000; the sketch of n = 100 000 holds a "
                 "1.6 GB float32 output).")
    OUT.write_text("\n".join(lines) + "\n")
    print(OUT)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--exact", type=int, nargs="*", default=None, help="exact sizes to measure (default small ones)")
    ap.add_argument("--no-sketch", action="store_true")
    ap.add_argument("--max-n", type=int, default=max(NS_SKETCH))
    ap.add_argument("--ns", type=int, nargs="*", default=None, help="sketch sizes (default: all)")
    args = ap.parse_args()
    RES.mkdir(parents=True, exist_ok=True)
    res = load()
    dc.KernelSketch(net(), M, kernel="ntk", degree=DEGREE, random_state=0).fit_transform(data(300))  # compile
    if not args.no_sketch:
        for n in (args.ns if args.ns is not None else NS_SKETCH):
            if n > args.max_n:
                continue
            t = time_sketch(n, repeats=3 if n <= 20_000 else 2 if n <= 50_000 else 1)
            res["sketch"][str(n)] = t
            print("sketch", n, f"{t:.2f}s", flush=True)
            STORE.write_text(json.dumps(res, indent=1))
    net().kernel(data(50), get="ntk", backend="numba", dtype=np.float32)  # compile
    for n in (args.exact if args.exact is not None else NS_EXACT):
        t = time_exact(n)
        res["exact"][str(n)] = t
        print("exact", n, f"{t:.2f}s", flush=True)
        STORE.write_text(json.dumps(res, indent=1))
    res["maxrss_mb"] = max(res.get("maxrss_mb", 0), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    STORE.write_text(json.dumps(res, indent=1))
    write(res)


if __name__ == "__main__":
    main()
