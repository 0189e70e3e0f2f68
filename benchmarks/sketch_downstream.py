"""Downstream: ridge on sketched NTK features vs exact NTK kernel ridge, scikit-learn's bundled data.

Datasets: digits (10 classes), breast_cancer (2 classes), diabetes (regression).  Features
standardised on the training part.  Split: 80% train / 20% test (stratified for classification);
the training part is split again 75/25 into fit / validation.  The ridge (relative alpha grid)
is chosen on the validation part, then refitted on fit + validation — identically for the
exact kernel (``net.kernel(X, backend="numpy").ntk``, :func:`validated_kernel_ridge`) and for
:class:`dualcalc.SketchRidge` (features from ``KernelSketch``).  The test part is used once.

Network: serial(Dense(1, 0.5), ReLU, Dense(1, 0.5), ReLU, Dense(1, 0.5)), NTK.
Targets: accuracy within 1 point of the exact kernel; regression test MSE within 5%.

Run: python benchmarks/sketch_downstream.py   (writes benchmarks/results/sketch_downstream.md)
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import dualcalc as dc
from dualcalc.sketch.ridge import validated_kernel_ridge

OUT = Path(__file__).resolve().parent / "results" / "sketch_downstream.md"
MS = (2048, 8192)
SEEDS = (0, 1, 2)


def network():
    return dc.serial(dc.Dense(1.0, 0.5), dc.activation("relu"), dc.Dense(1.0, 0.5), dc.activation("relu"),
                     dc.Dense(1.0, 0.5))


def run(name, X, y, task):
    strat = y if task == "classification" else None
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=0, stratify=strat)
    sc = StandardScaler().fit(Xtr)
    Xtr, Xte = sc.transform(Xtr), sc.transform(Xte)
    strat = ytr if task == "classification" else None
    Xf, Xv, yf, yv = train_test_split(Xtr, ytr, test_size=0.25, random_state=0, stratify=strat)
    net = network()
    t0 = time.time()
    k = lambda A, B: net.kernel(A, B, backend="numpy").ntk  # noqa: E731
    Xall = np.vstack([Xf, Xv])
    yall = np.concatenate([yf, yv])
    pred, alpha, _ = validated_kernel_ridge(k(Xf, Xf), yf, k(Xv, Xf), yv, k(Xte, Xf), task,
                                            K_all=k(Xall, Xall), K_te_all=k(Xte, Xall), y_all=yall)
    t_exact = time.time() - t0

    def metric(p):
        return float(np.mean(p == yte)) if task == "classification" else float(np.mean((p - yte) ** 2))

    exact = metric(pred)
    rows = []
    for m in MS:
        vals, alphas, ts = [], [], []
        for s in SEEDS:
            t0 = time.time()
            model = dc.SketchRidge(net, m, kernel="ntk", task=task, random_state=s).fit(Xf, yf, X_val=Xv, y_val=yv)
            vals.append(metric(model.predict(Xte)))
            ts.append(time.time() - t0)
            alphas.append(model.alpha_)
        rows.append((m, float(np.mean(vals)), float(np.std(vals)), alphas, float(np.mean(ts)),
                     model.sketch_.degrees_))
    return dict(name=name, task=task, n_train=len(Xall), n_test=len(Xte), d=X.shape[1], exact=exact,
                alpha=alpha, t_exact=t_exact, rows=rows)


def main():
    results = []
    for name, loader in (("digits", load_digits), ("breast_cancer", load_breast_cancer), ("diabetes", load_diabetes)):
        X, y = loader(return_X_y=True)
        task = "regression" if name == "diabetes" else "classification"
        r = run(name, X.astype(np.float64), y, task)
        results.append(r)
        print(r, flush=True)
    lines = ["# Ridge on sketched NTK features vs exact NTK kernel ridge", "",
             "Network serial(Dense(1, 0.5), ReLU, Dense(1, 0.5), ReLU, Dense(1, 0.5)), NTK.  80/20 train/test "
             "split (stratified), training part split 75/25 into fit/validation; alpha (relative ridge grid "
             "1e-7…10) chosen on validation, refitted on fit+validation; the test part used once.  Exact "
             "kernel: `net.kernel(X, backend='numpy')`.  Sketch: `dc.SketchRidge(net, m, kernel='ntk')`, "
             f"seeds {list(SEEDS)} (mean ± std).", "",
             "| data set | n train / test, d | metric | exact NTK | m | sketch | difference | target met | "
             "chosen alphas (exact; sketch) | sketch fit s | degrees |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        cls = r["task"] == "classification"
        for m, mean, sd, alphas, t, degs in r["rows"]:
            if cls:
                diff = 100 * (mean - r["exact"])
                ok = diff >= -1.0
                dtxt = f"{diff:+.2f} points"
                ex, sk = f"{100 * r['exact']:.2f}%", f"{100 * mean:.2f} ± {100 * sd:.2f}%"
            else:
                rel = mean / r["exact"] - 1
                ok = rel <= 0.05
                dtxt = f"{100 * rel:+.2f}%"
                ex, sk = f"{r['exact']:.1f}", f"{mean:.1f} ± {sd:.1f}"
            lines.append(f"| {r['name']} | {r['n_train']} / {r['n_test']}, {r['d']} | "
                         f"{'accuracy' if cls else 'test MSE'} | {ex} | {m} | {sk} | {dtxt} | {'yes' if ok else 'NO'} | "
                         f"{r['alpha']:.0e}; {', '.join(f'{a:.0e}' for a in alphas)} | {t:.1f} | {degs} |")
    lines += ["", "Exact-kernel ridge time (kernels + solves): " +
              ", ".join(f"{r['name']} {r['t_exact']:.1f} s" for r in results), ""]
    OUT.write_text("\n".join(lines) + "\n")
    print(OUT)


if __name__ == "__main__":
    main()
