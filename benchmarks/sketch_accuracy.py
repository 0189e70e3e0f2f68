"""Accuracy of KernelSketch: relative Frobenius error ‖Z Zᵀ − K‖_F / ‖K‖_F against the exact kernel.

n = 1000 points in R^256 with varied norms (rows N(0, I)·s, s ~ U(0.5, 2): not on the sphere),
depth-2 fully connected networks serial(Dense, σ, Dense, σ, Dense) with σ ∈ {ReLU, GeLU, tanh},
NTK and NNGP, n_components m ∈ {512, …, 16384}; the exact kernel is net.kernel(X, backend="numpy").

Two network scalings:
* main:  W_std = 1.0, b_std = 0.5
* hard:  W_std = 1.5, b_std = 0.1 — nearly diagonal kernels on this nearly orthogonal data;
  for them no data-oblivious sketch of dimension m can reach 5% (see the floor column).

"floor" is the expected error of *ideal* i.i.d. Gaussian random features of the exact kernel
(E[z zᵀ] = K, m of them): √(((tr K)² + ‖K‖²_F)/m)/‖K‖_F.  KernelSketch goes below it where the
constant and linear parts of the first layer pass exactly.

Run: python benchmarks/sketch_accuracy.py [--quick]   (writes benchmarks/results/sketch_accuracy.md)

``--branches``: the same data and error against serial, residual (two blocks
FanOut(2) → parallel(serial(σ, Dense, σ, Dense), Identity()) → FanInSum()), LayerNorm and FanInProd
networks with four activations each, Dense(1.5, 0.1) throughout (writes
benchmarks/results/sketch_branches.md; ``--ms`` picks the feature dimensions).
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

import dualcalc as dc

OUT = Path(__file__).resolve().parent / "results" / "sketch_accuracy.md"
OUT_BRANCHES = OUT.with_name("sketch_branches.md")


def data(n=1000, d=256, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, (n, 1))


def floor(K, m):
    return float(np.sqrt((np.trace(K) ** 2 + np.linalg.norm(K) ** 2) / m) / np.linalg.norm(K))


def branch_nets(act):
    """Four-activation networks: serial, residual, LayerNorm and FanInProd (Dense(1.5, 0.1))."""
    from dualcalc.network import FanInProd, FanInSum, FanOut, Identity, LayerNorm, parallel

    def D(w=1.5, b=0.1):
        return dc.Dense(w, b)

    blk = dc.serial(FanOut(2), parallel(dc.serial(act, D(), act, D()), Identity()), FanInSum())
    return {
        "serial": dc.serial(D(), *[act, D()] * 4),
        "residual": dc.serial(D(), blk, blk, D()),
        "layernorm": dc.serial(D(), act, D(), LayerNorm(), act, D(), LayerNorm(), act, D(), act, D()),
        "prod": dc.serial(D(), act, D(), FanOut(2), parallel(dc.serial(act, D()), dc.serial(act, D(1.0, 0.3))),
                          FanInProd(), act, D()),
    }


def branches(args):
    X = data()
    n = X.shape[0]
    ms = args.ms
    lines = ["# KernelSketch of branched networks", "",
             f"n = {n} points in R^{X.shape[1]} (as sketch_accuracy.md: rows N(0, I)·s, s ~ U(0.5, 2)); "
             "four activations per network, Dense(1.5, 0.1) throughout: serial(D, σ, D, σ, D, σ, D, σ, D); "
             "residual serial(D, blk, blk, D), blk = serial(FanOut(2), parallel(serial(σ, D, σ, D), Identity()), "
             "FanInSum()); layernorm serial(D, σ, D, LayerNorm(), σ, D, LayerNorm(), σ, D, σ, D); prod "
             "serial(D, σ, D, FanOut(2), parallel(serial(σ, D), serial(σ, Dense(1.0, 0.3))), FanInProd(), σ, D). "
             "Relative Frobenius error ‖ZZᵀ − K‖/‖K‖ against `net.kernel(X, backend='numpy')`, mean of "
             f"{args.seeds} seed(s), degrees chosen automatically; (×floor) = error / the error of m ideal "
             "i.i.d. Gaussian features of K; slope of log error vs log m; µs/pt = fit_transform time per point "
             "at the largest m.", "",
             f"Command: `python benchmarks/sketch_accuracy.py --branches --ms {' '.join(map(str, ms))} "
             f"--seeds {args.seeds}`", "",
             f"Machine: {platform.machine()}, {platform.python_version()}, 2 cores shared with other jobs "
             "(timings indicative only).", ""]
    head = "| σ | net | kernel | " + " | ".join(f"m={m}" for m in ms) + " | slope | µs/pt | degrees |"
    lines += [head, "|" + "---|" * (len(ms) + 6)]
    for a in args.acts:
        for name, net in branch_nets(dc.activation(a)).items():
            k = net.kernel(X, backend="numpy")
            for kern in ("nngp", "ntk"):
                K = getattr(k, kern)
                errs, cells = [], []
                for m in ms:
                    e = []
                    for seed in range(args.seeds):
                        t0 = time.time()
                        sk = dc.KernelSketch(net, m, kernel=kern, random_state=seed)
                        Z = sk.fit_transform(X)
                        secs = time.time() - t0
                        e.append(np.linalg.norm(Z @ Z.T - K) / np.linalg.norm(K))
                    errs.append(float(np.mean(e)))
                    cells.append(f"{errs[-1]:.4f} ({errs[-1] / floor(K, m):.2f}×)")
                    print(a, name, kern, m, f"{errs[-1]:.4f}", sk.degrees_, f"{secs:.1f}s", flush=True)
                slope = float(np.polyfit(np.log(ms), np.log(errs), 1)[0])
                lines.append(f"| {a} | {name} | {kern} | " + " | ".join(cells)
                             + f" | {slope:.2f} | {1e6 * secs / n:.0f} | {sk.degrees_} |")
    OUT_BRANCHES.write_text("\n".join(lines) + "\n")
    print(OUT_BRANCHES)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="m ≤ 8192, main scaling only")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--branches", action="store_true", help="serial vs residual, LayerNorm, FanInProd nets")
    ap.add_argument("--ms", type=int, nargs="+", default=[512, 2048, 8192], help="feature dimensions (--branches)")
    ap.add_argument("--acts", nargs="+", default=["relu", "erf"], help="activations (--branches)")
    args = ap.parse_args()
    if args.branches:
        return branches(args)
    X = data()
    ms = [512, 1024, 2048, 4096, 8192] + ([] if args.quick else [16384])
    configs = [("main", 1.0, 0.5)] + ([] if args.quick else [("hard", 1.5, 0.1)])
    lines = ["# KernelSketch accuracy", "",
             f"n = {X.shape[0]} points in R^{X.shape[1]}, rows N(0, I)·s with s ~ U(0.5, 2) (varied norms); "
             "networks serial(Dense(W, b), σ, Dense(W, b), σ, Dense(W, b)); exact kernel from "
             "`net.kernel(X, backend='numpy')`; relative Frobenius error ‖ZZᵀ − K‖/‖K‖ of one sketch "
             f"(random_state = seed, {args.seeds} seed(s), mean shown); degrees chosen automatically "
             "(`degree=None`, per layer, listed); floor = ideal i.i.d. Gaussian features of the exact "
             "kernel, √(((tr K)² + ‖K‖²)/m)/‖K‖; slope = least-squares slope of log error vs log m.", "",
             f"Machine: {platform.machine()}, {platform.python_version()}, 2 cores shared with other jobs "
             "(timings indicative only).", ""]
    summary = []
    for tag, W, b in configs:
        lines += [f"## {tag}: W_std = {W}, b_std = {b}", ""]
        head = "| σ | kernel | " + " | ".join(f"m={m}" for m in ms) + " | slope | floor@8192 | degrees@8192 | s@8192 |"
        lines += [head, "|" + "---|" * (len(ms) + 6)]
        for a in ("relu", "gelu", "tanh"):
            act = dc.activation(a)
            net = dc.serial(dc.Dense(W, b), act, dc.Dense(W, b), act, dc.Dense(W, b))
            t0 = time.time()
            k = net.kernel(X, backend="numpy")
            t_exact = time.time() - t0
            for kern in ("nngp", "ntk"):
                K = getattr(k, kern)
                errs, degs, secs = [], {}, {}
                for m in ms:
                    e = []
                    for seed in range(args.seeds):
                        t0 = time.time()
                        sk = dc.KernelSketch(net, m, kernel=kern, random_state=seed)
                        Z = sk.fit_transform(X)
                        secs[m] = time.time() - t0
                        e.append(np.linalg.norm(Z @ Z.T - K) / np.linalg.norm(K))
                    errs.append(float(np.mean(e)))
                    degs[m] = sk.degrees_
                    print(tag, a, kern, m, f"{errs[-1]:.4f}", sk.degrees_, f"{secs[m]:.1f}s", flush=True)
                slope = float(np.polyfit(np.log(ms), np.log(errs), 1)[0])
                fl = floor(K, 8192)
                e8 = errs[ms.index(8192)]
                summary.append((tag, a, kern, e8, fl))
                lines.append(f"| {a} | {kern} | " + " | ".join(f"{e:.4f}" for e in errs)
                             + f" | {slope:.2f} | {fl:.4f} | {degs[8192]} | {secs[8192]:.1f} |")
            lines.append(f"<!-- exact kernel {a}: {t_exact:.1f} s -->")
        lines.append("")
    main_ok = all(e <= 0.05 for tag, _, _, e, _ in summary if tag == "main")
    lines += ["## Verdict", "",
              f"Target (error ≤ 0.05 at m = 8192 for every case, main scaling): "
              f"{'met' if main_ok else 'NOT met'}.",
              "Worst case at 8192: " + ", ".join(f"{t}/{a}/{k}: {e:.4f} (floor {f:.4f})"
                                                  for t, a, k, e, f in summary), ""]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print(OUT)


if __name__ == "__main__":
    main()
