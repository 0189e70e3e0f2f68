"""Write the worked-example notebooks (outputs stripped) from the cell lists below.

    python notebooks/make_notebooks.py          # rewrite notebooks/*.ipynb
    python notebooks/make_notebooks.py --check  # exit 1 if a notebook differs from this script

The notebooks are executed top to bottom by tests/test_notebooks.py.  Edit the
cells here, not in Jupyter, so the committed files stay output-free and reviewable.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# ---------------------------------------------------------------------------------------------
REGISTER = [
    ("md", """# Register your own activation

A new activation is one line of text.  This notebook registers one, reads its dual (method,
accuracy, Hermite coefficients), prints the code generated for a network that uses it, and checks
the infinite-width kernels against finite random networks of growing width."""),
    ("code", """%matplotlib inline
import os, tempfile
import numpy as np
import matplotlib.pyplot as plt
import dualcalc as dc

# keep this notebook's user catalog out of ~/.config (the tests run it too)
os.environ.setdefault("DUALCALC_CATALOG_DIR", tempfile.mkdtemp(prefix="dualcalc-catalog-"))"""),
    ("md", """## 1. Register it

`dc.register` makes a named activation for this process.  The formula goes through the safe
parser (an `ast` whitelist, never `eval`); parameters get defaults and can be changed per use."""),
    ("code", """act = dc.register("swish_b", "x*sigmoid(b*x)", b=1.0)
act, act.expr"""),
    ("md", """`dualcalc register` writes the same thing as a validated TOML file into the user catalog, so the
name also works in later sessions and `dualcalc catalog build` includes it (here the user
catalog is a temporary folder)."""),
    ("code", """from dualcalc.cli import main as dualcalc_cli

dualcalc_cli(["register", "swish_b", "x*sigmoid(b*x)", "--param", "b=1.0", "--force"])
print(open(os.path.join(os.environ["DUALCALC_CATALOG_DIR"], "swish_b.toml")).read())"""),
    ("md", """## 2. Its dual

No closed form is known for swish, so dualcalc uses the norm-aware Hermite series
k(q1, q2, c) = Σ_l r_l(q1) r_l(q2) ρ^l, with the degree chosen to meet a stated tolerance."""),
    ("code", """d = act.dual
print("method:", d.method, "| rule:", d.rule, "| degree:", d.degree, "| stated error:", f"{d.error_estimate:.1e}")
print("k(1, 1, 0.5)  =", float(act.nngp(1.0, 1.0, 0.5)))
print("k'(1, 1, 0.5) =", float(act.ntk(1.0, 1.0, 0.5)))
print("r_l(1), l = 0..8:", np.round(act.hermite(8, 1.0), 6))"""),
    ("md", "The independent quadrature oracle that `dualcalc catalog build` uses agrees:"),
    ("code", """from dualcalc.verify import verify_activation

v = verify_activation(act)
print(f"largest normalised error: NNGP {v.nngp_error:.1e}, NTK {v.ntk_error:.1e} (tolerance {v.tolerance:.0e})")"""),
    ("code", """fig = act.plot()
fig"""),
    ("md", """## 3. The generated code

A network using the activation is compiled to one fused kernel; `net.source` shows the text
that runs."""),
    ("code", """net = dc.serial(dc.Dense(1.5, 0.1), act, dc.Dense(1.5, 0.1))
try:
    src = net.source("numba")
    print(src[:2500] + ("\\n..." if len(src) > 2500 else ""))
except (ImportError, dc.DualcalcError) as err:  # the generated backends are optional in this build
    print("code generation not available here:", err)"""),
    ("md", """## 4. Check against finite networks

One hidden layer in the NTK parameterisation (neural-tangents conventions):
h = (W/√d)·W₁x + b·β₁, f = (W/√N)·w₂·σ(h) + b·β₂ with standard normal weights.  Over the
random weights, E[f(x)f(y)] is the NNGP, and the empirical NTK
Σ_θ ∂f/∂θ(x) ∂f/∂θ(y) = b² + W²/N Σ_k σ(h_k(x))σ(h_k(y)) + W²/N Σ_k w₂ₖ² σ'(h_k(x))σ'(h_k(y))·(W²⟨x,y⟩/d + b²)
tends to the NTK as the width N grows."""),
    ("code", """W, b = 1.5, 0.1
rng = np.random.default_rng(0)
X = rng.standard_normal((6, 4))
exact = net.kernel(X, backend="numpy")

import sympy as sp
from dualcalc.activation import numpy_function
from dualcalc.symbols import x as sym_x
sigma = act.function
dsigma = numpy_function(sp.diff(act.expr, sym_x))

def finite_kernels(N, seed):
    r = np.random.default_rng(seed)
    d = X.shape[1]
    W1, b1, w2 = r.standard_normal((d, N)), r.standard_normal(N), r.standard_normal(N)
    H = W / np.sqrt(d) * X @ W1 + b * b1
    S, D = sigma(H), dsigma(H) * w2
    nngp = W**2 / N * S @ S.T + b**2
    ntk = b**2 + W**2 / N * S @ S.T + W**2 / N * (D @ D.T) * (W**2 * X @ X.T / X.shape[1] + b**2)
    return nngp, ntk

widths = [250, 1000, 4000, 16000, 64000]
err = {"nngp": [], "ntk": []}
for N in widths:
    runs = [finite_kernels(N, s) for s in range(4)]
    for i, name in enumerate(("nngp", "ntk")):
        ref = getattr(exact, name)
        e = np.mean([np.linalg.norm(r[i] - ref) / np.linalg.norm(ref) for r in runs])
        err[name].append(e)
for N, a, t in zip(widths, err["nngp"], err["ntk"]):
    print(f"N = {N:6d}: relative error NNGP {a:.2e}, NTK {t:.2e}")"""),
    ("code", """fig, ax = plt.subplots(figsize=(5, 3.5))
ax.loglog(widths, err["nngp"], "o-", label="NNGP")
ax.loglog(widths, err["ntk"], "s-", label="NTK")
ax.loglog(widths, err["ntk"][0] * np.sqrt(widths[0] / np.array(widths)), "k--", lw=0.8, label="1/√N")
ax.set_xlabel("width N"); ax.set_ylabel("relative Frobenius error"); ax.legend()
assert err["nngp"][-1] < 0.05 and err["ntk"][-1] < 0.05    # finite networks converge to the exact kernels
assert err["ntk"][-1] < err["ntk"][0] / 4"""),
]

# ---------------------------------------------------------------------------------------------
HERMITE = [
    ("md", """# Hermite series against closed forms: accuracy and speed

Every activation has a norm-aware Hermite series k(q1, q2, c) = Σ_l r_l(q1) r_l(q2) ρ^l
(docs/math.md §2); some also have a closed form.  Where both exist we can measure how fast the series
converges — fast for smooth activations (GeLU), slowly for kinks (ReLU) — and what each costs to
evaluate.  Only public API is used: `act.hermite(L, q)` gives r_l(q)."""),
    ("code", """%matplotlib inline
import time, warnings
import numpy as np
import matplotlib.pyplot as plt
import dualcalc as dc

# (q1, q2, c) on 2000 random pairs; the variances come from a grid of 64 values
rng = np.random.default_rng(0)
n = 2000
grid = np.linspace(0.3, 3.0, 64)
q1 = rng.choice(grid, n); q2 = rng.choice(grid, n)
rho = rng.uniform(-0.99, 0.99, n); c = rho * np.sqrt(q1 * q2)

def series(act, L):
    \"\"\"k and k' from the Hermite coefficients r_l(q), l = 0..L.\"\"\"
    qs, inv = np.unique(np.concatenate([q1, q2]), return_inverse=True)
    R = act.hermite(L, qs)
    R1, R2 = R[inv[:n]], R[inv[n:]]
    l = np.arange(L + 1)
    P = rho[:, None] ** l
    k = np.sum(R1 * R2 * P, axis=1)
    kd = np.sum((l * R1 * R2)[:, 1:] * P[:, :-1], axis=1) / np.sqrt(q1 * q2)
    return k, kd"""),
    ("code", """degrees = [2, 4, 8, 16, 32, 64, 128]
acc = {}
for name in ("gelu", "relu"):
    act = dc.activation(name)
    k_ref, kd_ref = act.nngp(q1, q2, c), act.ntk(q1, q2, c)
    print(name, act.dual.method, act.dual.rule)
    acc[name] = []
    for L in degrees:
        k, kd = series(act, L)
        acc[name].append((np.max(np.abs(k - k_ref)) / np.max(np.abs(k_ref)),
                          np.max(np.abs(kd - kd_ref)) / np.max(np.abs(kd_ref))))
    for L, (ek, ed) in zip(degrees, acc[name]):
        print(f"  degree {L:4d}: NNGP {ek:.1e}   NTK {ed:.1e}")"""),
    ("code", """fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
for i, which in enumerate(("NNGP", "NTK")):
    for name, m in (("gelu", "o-"), ("relu", "s-")):
        ax[i].loglog(degrees, [a[i] for a in acc[name]], m, label=name)
    ax[i].set_title(f"{which}: Hermite series vs closed form"); ax[i].set_xlabel("degree L")
    ax[i].set_ylabel("max relative error"); ax[i].legend()
# smooth: spectral convergence; kinked: algebraic (and slower still for the NTK)
assert acc["gelu"][-2][0] < 1e-9 and acc["relu"][-1][0] > 1e-6"""),
    ("md", """## Speed

Closed forms are a handful of transcendental functions per entry; the series costs O(L) per
entry once the per-point coefficients r_l(q) are known (they depend on each point's variance only),
plus computing those coefficients by quadrature.  Timings are noisy on a shared machine."""),
    ("code", """def best(f, repeat=3):
    ts = []
    for _ in range(repeat):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return min(ts)

gelu = dc.activation("gelu")
L = next(L for L, a in zip(degrees, acc["gelu"]) if max(a) < 1e-8)
qs, inv = np.unique(np.concatenate([q1, q2]), return_inverse=True)
R = gelu.hermite(L, qs); R1, R2 = R[inv[:n]], R[inv[n:]]

def horner():
    out = np.zeros(n)
    for l in range(L, -1, -1):
        out = out * rho + R1[:, l] * R2[:, l]
    return out

t_closed = best(lambda: gelu.nngp(q1, q2, c))
t_coeff = best(lambda: gelu.hermite(L, qs), repeat=1)
t_series = best(horner)
print(f"{n} entries; Hermite degree {L} reaches 1e-8 for GeLU")
print(f"closed form          : {t_closed * 1e3:7.2f} ms")
print(f"series (Horner)      : {t_series * 1e3:7.2f} ms")
print(f"coefficients r_l(q)  : {t_coeff * 1e3:7.2f} ms for {qs.size} distinct variances "
      "(quadrature; a network needs them once per point and layer, not per pair)")
np.testing.assert_allclose(horner(), gelu.nngp(q1, q2, c), rtol=1e-7, atol=1e-9)"""),
    ("md", """## Activations without a closed form

For tanh the Hermite series *is* the method; the library picks the degree from the tolerance
and states the error it achieves.  The independent quadrature oracle confirms it."""),
    ("code", """from dualcalc.verify import verify_activation

tanh = dc.activation("tanh")
with warnings.catch_warnings():  # the stated error is printed below
    warnings.simplefilter("ignore", RuntimeWarning)
    tanh.dual.degree
v = verify_activation(tanh)
print(f"tanh: {tanh.dual.method}, degree {tanh.dual.degree}, stated {tanh.dual.error_estimate:.1e}, "
      f"measured NNGP {v.nngp_error:.1e} / NTK {v.ntk_error:.1e}")
assert v.passed"""),
]

# ---------------------------------------------------------------------------------------------
SKETCH = [
    ("md", """# NTK sketch + ridge regression on digits

`dc.KernelSketch` is a scikit-learn transformer whose features Z satisfy Z Zᵀ ≈ the network's
NTK.  A linear ridge classifier on Z approximates kernel ridge regression with the exact NTK at a
cost linear in the number of points.  Data: scikit-learn's bundled 8×8 digits (1797 images, no
download)."""),
    ("code", """%matplotlib inline
import time
import numpy as np
import matplotlib.pyplot as plt
from sklearn.datasets import load_digits
from sklearn.linear_model import RidgeClassifier
from sklearn.model_selection import train_test_split
import dualcalc as dc

X, y = load_digits(return_X_y=True)
X = X / 16.0
X = X - X.mean(axis=0)
X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
net = dc.serial(dc.Dense(1.5, 0.1), dc.activation("relu"), dc.Dense(1.5, 0.1), dc.activation("relu"),
                dc.Dense(1.5, 0.1))
X_tr.shape, X_te.shape"""),
    ("md", "Exact NTK kernel ridge regression, the reference:"),
    ("code", """t = time.perf_counter()
K_tr = net.kernel(X_tr, get="ntk").ntk
K_te = net.kernel(X_te, X_tr, get="ntk").ntk
t_exact = time.perf_counter() - t
Y = np.eye(10)[y_tr]
lam = 1e-3 * np.trace(K_tr) / len(K_tr)
alpha = np.linalg.solve(K_tr + lam * np.eye(len(K_tr)), Y)
acc_exact = np.mean(np.argmax(K_te @ alpha, axis=1) == y_te)
print(f"exact NTK: test accuracy {acc_exact:.3f} ({t_exact:.2f} s for the kernels)")"""),
    ("md", "Sketched NTK features and a linear ridge classifier, at growing feature dimension:"),
    ("code", """rows = []
for m in (512, 2048):
    t = time.perf_counter()
    sk = dc.KernelSketch(net, n_components=m, kernel="ntk", random_state=0)
    Z_tr = sk.fit_transform(X_tr)
    Z_te = sk.transform(X_te)
    t_sketch = time.perf_counter() - t
    err = np.linalg.norm(Z_tr @ Z_tr.T - K_tr) / np.linalg.norm(K_tr)
    clf = RidgeClassifier(alpha=lam).fit(Z_tr, y_tr)
    rows.append((m, err, clf.score(Z_te, y_te), t_sketch))
    print(f"m = {m:5d}: kernel error {err:.3f}, test accuracy {rows[-1][2]:.3f}, sketch {t_sketch:.2f} s")"""),
    ("code", """ms = [r[0] for r in rows]
fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
ax[0].loglog(ms, [r[1] for r in rows], "o-", label="sketch")
ax[0].loglog(ms, rows[0][1] * np.sqrt(ms[0] / np.array(ms)), "k--", lw=0.8, label="1/√m")
ax[0].set_xlabel("feature dimension m"); ax[0].set_ylabel("relative Frobenius error of Z Zᵀ"); ax[0].legend()
ax[1].semilogx(ms, [r[2] for r in rows], "o-", label="sketch + ridge")
ax[1].axhline(acc_exact, color="k", ls="--", lw=0.8, label="exact NTK")
ax[1].set_xlabel("feature dimension m"); ax[1].set_ylabel("test accuracy"); ax[1].legend()
assert rows[-1][1] < rows[0][1]                 # more features, a better kernel
assert rows[-1][2] > acc_exact - 0.03           # and nearly the exact kernel's accuracy"""),
]

# ---------------------------------------------------------------------------------------------
PREDICT = [
    ("md", """# Infinite-width predictions with uncertainty, against trained finite networks

`dc.predict` computes what an infinitely wide network predicts — the NNGP posterior and the mean and
covariance of gradient-descent training under the NTK — with neural-tangents' names and semantics
(docs/predict.md).  Here: scikit-learn's diabetes data set (442 patients, 10 features, no download),
a one-hidden-layer ReLU network, and finite numpy networks of growing width trained by full-batch
gradient descent, which approach the NTK prediction as the width grows."""),
    ("code", """%matplotlib inline
import numpy as np
import matplotlib.pyplot as plt
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
import dualcalc as dc

X, y = load_diabetes(return_X_y=True)
X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=0)
scale = StandardScaler().fit(X_tr)
X_tr, X_te = scale.transform(X_tr), scale.transform(X_te)
y_mean, y_std = y_tr.mean(), y_tr.std()
y_tr, y_te = (y_tr - y_mean) / y_std, (y_te - y_mean) / y_std      # standardised targets
W_std, b_std = 1.5, 0.1
net = dc.serial(dc.Dense(W_std, b_std), dc.activation("relu"), dc.Dense(W_std, b_std))
K_tr, K_te, K_tt = net.kernel(X_tr), net.kernel(X_te, X_tr), net.kernel(X_te)
X_tr.shape, X_te.shape"""),
    ("md", """## 1. The NNGP posterior (Bayesian inference with the infinite network as prior)

`gp_inference` gives the posterior mean and covariance; `diag_reg` is the observation noise as a
fraction of the mean prior variance (neural-tangents' scaling).  The predictive standard deviation
adds that noise back."""),
    ("code", """diag_reg = 0.3
posterior = dc.predict.gp_inference(K_tr, y_tr[:, None], diag_reg=diag_reg)("nngp", K_te, K_tt)
noise = diag_reg * np.trace(K_tr.nngp) / len(X_tr)
sd_nngp = np.sqrt(np.diag(posterior.covariance) + noise)
rmse = lambda f: np.sqrt(np.mean((np.ravel(f) - y_te) ** 2))
inside = np.mean(np.abs(posterior.mean[:, 0] - y_te) < 2 * sd_nngp)
print(f"NNGP posterior: test RMSE {rmse(posterior.mean):.3f} (predicting the mean: {rmse(0 * y_te):.3f}), "
      f"{inside:.0%} of test targets within ±2 sd")
assert rmse(posterior.mean) < 0.8 and 0.85 < inside <= 1.0"""),
    ("md", """## 2. The NTK: gradient-descent training of the infinite ensemble

`gradient_descent_mse_ensemble` gives the mean and covariance over random initialisations of the
network's test output after training for time t with learning rate η (on the loss ½n⁻¹‖f − y‖²),
from one eigendecomposition of the train NTK; `t=None` is the end of training."""),
    ("code", """eta = dc.predict.max_learning_rate(K_tr.ntk) / 4
steps = 300
ensemble = dc.predict.gradient_descent_mse_ensemble(net, X_tr, y_tr[:, None], learning_rate=eta)
ntk_t = ensemble(t=steps, x_test=X_te, get="ntk", compute_cov=True)
ntk_inf = ensemble(t=None, x_test=X_te, get="ntk")
sd_ntk = np.sqrt(np.diag(ntk_t.covariance))
print(f"learning rate {eta:.3f}; NTK ensemble test RMSE after {steps} steps {rmse(ntk_t.mean):.3f}, "
      f"at convergence {rmse(ntk_inf):.3f} (longer training over-fits)")"""),
    ("md", """## 3. Finite networks of growing width

A numpy network f(x) = W_std/√N · w₂·relu(W_std/√d · W₁x + b_std b₁) + b_std b₂ (the NTK
parameterisation of `dc.Dense`), standard-normal initialisation, trained by full-batch gradient
descent.  Given *its own* initial outputs f₀, the infinite-width theory predicts its trained output
exactly: `gradient_descent_mse(...)(t, fx_train_0, fx_test_0, k_test_train)`.  The gap closes like
1/√N, with no Monte Carlo noise in the comparison."""),
    ("code", """def relu(h):
    return np.maximum(h, 0.0)

def train(N, seed):
    \"\"\"Initial and trained outputs of one width-N network (full-batch gradient descent).\"\"\"
    r = np.random.default_rng(seed)
    d, n = X_tr.shape[1], len(X_tr)
    P = [r.standard_normal((d, N)), r.standard_normal(N), r.standard_normal(N), r.standard_normal()]
    def forward(P, X):
        H = W_std / np.sqrt(d) * X @ P[0] + b_std * P[1]
        return W_std / np.sqrt(N) * relu(H) @ P[2] + b_std * P[3], H
    f0_tr, f0_te = forward(P, X_tr)[0], forward(P, X_te)[0]
    for _ in range(steps):
        f, H = forward(P, X_tr)
        g = (f - y_tr) / n                                   # ∂L/∂f
        gH = np.outer(g, W_std / np.sqrt(N) * P[2]) * (H > 0)
        grads = [W_std / np.sqrt(d) * X_tr.T @ gH, b_std * gH.sum(0),
                 W_std / np.sqrt(N) * relu(H).T @ g, b_std * g.sum()]
        P = [p - eta * q for p, q in zip(P, grads)]
    return f0_tr, f0_te, forward(P, X_te)[0]

linearised = dc.predict.gradient_descent_mse(K_tr.ntk, y_tr[:, None], learning_rate=eta)
widths = [64, 256, 1024, 4096]
gap = []
for N in widths:
    e = []
    for seed in range(2):
        f0_tr, f0_te, f_te = train(N, seed)
        theory = linearised(steps, f0_tr[:, None], f0_te[:, None], K_te.ntk)[1][:, 0]
        e.append(np.linalg.norm(f_te - theory) / np.linalg.norm(theory))
    gap.append(np.mean(e))
    print(f"N = {N:5d}: trained network vs its infinite-width prediction, relative error {gap[-1]:.3f}")
assert gap[-1] < gap[0] / 3                  # 1/√N would give 1/8 over this range"""),
    ("md", """## 4. The ensemble: mean and uncertainty

Train 32 networks of width 512 from different seeds; their mean and variance estimate the NTK
ensemble's mean and variance (within Monte Carlo error: the mean's standard error is sd/√32)."""),
    ("code", """S, N = 32, 512
F = np.array([train(N, 100 + s)[2] for s in range(S)])
z = (F.mean(0) - ntk_t.mean[:, 0]) / (sd_ntk / np.sqrt(S))
ratio = F.var(0, ddof=1).mean() / np.diag(ntk_t.covariance).mean()
print(f"ensemble mean vs NTK mean: rms z-score {np.sqrt(np.mean(z ** 2)):.2f} (1 expected); "
      f"mean variance ratio finite/NTK {ratio:.2f}; ensemble RMSE {rmse(F.mean(0)):.3f}")
assert np.sqrt(np.mean(z ** 2)) < 2.0 and 0.6 < ratio < 1.5"""),
    ("code", """order = np.argsort(ntk_t.mean[:, 0])
i = np.arange(len(order))
fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
ax[0].loglog(widths, gap, "o-", label="trained network")
ax[0].loglog(widths, gap[0] * np.sqrt(widths[0] / np.array(widths)), "k--", lw=0.8, label="1/√N")
ax[0].set_xlabel("width N"); ax[0].set_ylabel("relative error vs infinite width"); ax[0].legend()
m = ntk_t.mean[order, 0]
ax[1].fill_between(i, m - 2 * sd_ntk[order], m + 2 * sd_ntk[order], alpha=0.3, label="NTK ensemble ±2 sd")
ax[1].plot(i, m, "C0-", label="NTK ensemble mean")
ax[1].plot(i, F.mean(0)[order], "C1.", ms=4, label=f"mean of {S} trained nets (N = {N})")
ax[1].plot(i, y_te[order], "k.", ms=3, label="test target")
ax[1].set_xlabel("test point (sorted by prediction)"); ax[1].set_ylabel("standardised target")
ax[1].legend(fontsize=7)
fig"""),
]

NOTEBOOKS = {
    "01_register_your_own_activation.ipynb": REGISTER,
    "02_hermite_vs_closed_form.ipynb": HERMITE,
    "03_ntk_sketch_digits.ipynb": SKETCH,
    "04_predictions_diabetes.ipynb": PREDICT,
}


def notebook(cells) -> dict:
    out = []
    for kind, text in cells:
        cell = {"cell_type": "markdown" if kind == "md" else "code", "metadata": {}, "source": text}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        out.append(cell)
    return {
        "cells": out,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def render(cells) -> str:
    nb = notebook(cells)
    for i, cell in enumerate(nb["cells"]):  # stable ids (nbformat ≥ 4.5)
        cell["id"] = f"cell-{i:02d}"
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    check = "--check" in argv
    stale = []
    for name, cells in NOTEBOOKS.items():
        path = HERE / name
        text = render(cells)
        if check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print("out of date (run python notebooks/make_notebooks.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
