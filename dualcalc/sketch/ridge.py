r"""Ridge regression and classification on sketched NNGP/NTK features, in O(n·m²).

:class:`SketchRidge` fits a :class:`~dualcalc.sketch.KernelSketch` on the training inputs,
maps them to m features Z, and solves ridge regression in the feature space:

    w_λ = (Zᵀ Z + λ I)⁻¹ Zᵀ y        (with an unpenalised intercept: Z and y centred)

One eigendecomposition of the m×m Gram matrix Zᵀ Z (O(n·m²) to form, O(m³) to factor; or of
the n×n matrix Z Zᵀ when n < m) gives w_λ for every λ of the grid at O(m²) each, so the ridge is chosen on *validation* data —
a held-out part of the training set (``validation_fraction``, stratified for classification)
or an explicit ``(X_val, y_val)`` — never on the test data.  The model is then refitted on all
of the training data (train + validation) with the chosen λ (``refit=True``).  The n×n kernel
matrix is never formed: memory O(n·m + m²).

Regularisation is relative: λ = alpha · mean_i K(x_i, x_i) with the mean kernel diagonal
estimated by ‖Z‖²_F / n, so one alpha grid suits any network scale.

Classification (``task="classification"``, or "auto" with a non-float target) regresses
one-vs-all ±1 targets and predicts the arg-max, like scikit-learn's RidgeClassifier.

Equivalent scikit-learn recipe (for reference; it lacks the shared eigendecomposition)::

    from sklearn.pipeline import make_pipeline
    from sklearn.linear_model import RidgeCV
    model = make_pipeline(dc.KernelSketch(net, 4096, kernel="ntk", random_state=0),
                          RidgeCV(alphas=np.logspace(-6, 2, 17)))   # CV on training data only
"""
from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted

from ..errors import ParameterError
from .kernel_sketch import KernelSketch

__all__ = ["SketchRidge", "ridge_path", "validated_kernel_ridge"]

DEFAULT_ALPHAS = tuple(np.logspace(-7, 1, 17))


class _RidgePath:
    """Ridge solutions w_λ = (Zᵀ Z + λ I)⁻¹ Zᵀ Y for many λ from one eigendecomposition.

    Primal (m×m Gram Zᵀ Z, O(n·m² + m³)) when m ≤ n, dual (n×n Gram Z Zᵀ, O(n²·m + n³), with
    w = Zᵀ (Z Zᵀ + λ I)⁻¹ Y) when n < m — the same solutions, whichever factorisation is smaller.
    """

    def __init__(self, Z: np.ndarray, Y: np.ndarray):
        n, m = Z.shape
        self.primal = m <= n
        if self.primal:
            s, V = np.linalg.eigh(Z.T @ Z)
            self.B = V.T @ (Z.T @ Y)
        else:
            s, V = np.linalg.eigh(Z @ Z.T)
            self.B = V.T @ Y
            self.Z = Z
        self.s, self.V = np.maximum(s, 0.0), V

    def weights(self, lam: float) -> np.ndarray:
        a = self.V @ (self.B / (self.s + lam)[:, None])
        return a if self.primal else self.Z.T @ a


def ridge_path(Z, Y, lambdas):
    """Weights for every λ: array (len(λ), m, k)."""
    p = _RidgePath(Z, Y)
    return np.stack([p.weights(lam) for lam in lambdas])


def _targets(y, task):
    if task == "classification":
        classes, yi = np.unique(y, return_inverse=True)
        Y = -np.ones((len(y), len(classes)))
        Y[np.arange(len(y)), yi] = 1.0
        return Y, classes
    y = np.asarray(y, dtype=np.float64)
    return (y[:, None] if y.ndim == 1 else y), None


def _score(task, pred, y, classes):
    if task == "classification":
        return float(np.mean(classes[np.argmax(pred, axis=1)] == y))
    y = np.asarray(y, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    return -float(np.mean((pred - y) ** 2))  # higher is better


class SketchRidge(BaseEstimator):
    """Ridge regression / classification on KernelSketch features with a validated ridge.

    Parameters
    ----------
    net, n_components, kernel, degree, random_state : passed to :class:`KernelSketch`.
    alphas : relative ridge grid (λ = alpha · mean kernel diagonal).
    task : "auto", "regression" or "classification".
    validation_fraction : held-out share of the training data used to choose alpha when
        ``fit`` gets no explicit validation set.
    refit : refit on train + validation with the chosen alpha.
    sketch_params : dict of further KernelSketch parameters (``normalize``, ``degree_tol``, …).

    Attributes
    ----------
    sketch_ : the fitted KernelSketch; alpha_ : chosen alpha; validation_scores_ : accuracy
    (classification) or −MSE (regression) per alpha; coef_ (m, k), intercept_ (k,);
    classes_ (classification).
    """

    def __init__(self, net=None, n_components=2048, kernel="ntk", degree=None, random_state=None, *,
                 alphas=DEFAULT_ALPHAS, task="auto", validation_fraction=0.2, refit=True, sketch_params=None):
        self.net = net
        self.n_components = n_components
        self.kernel = kernel
        self.degree = degree
        self.random_state = random_state
        self.alphas = alphas
        self.task = task
        self.validation_fraction = validation_fraction
        self.refit = refit
        self.sketch_params = sketch_params

    def _task(self, y):
        if self.task in ("regression", "classification"):
            return self.task
        if self.task != "auto":
            raise ParameterError(f"task must be 'auto', 'regression' or 'classification', got {self.task!r}")
        kind = type_of_target(y)
        return "classification" if kind in ("binary", "multiclass") and not np.issubdtype(
            np.asarray(y).dtype, np.floating) else "regression"

    def fit(self, X, y, X_val=None, y_val=None):
        """Fit the sketch on X, choose alpha on (X_val, y_val) or a held-out part of X, refit."""
        y = np.asarray(y)
        if len(y) != X.shape[0]:
            raise ParameterError(f"X has {X.shape[0]} rows but y has {len(y)}")
        alphas = np.asarray(self.alphas, dtype=np.float64).ravel()
        if alphas.size == 0 or np.any(~np.isfinite(alphas)) or np.any(alphas <= 0):
            raise ParameterError("alphas must be positive finite numbers")
        task = self._task(y)
        self.task_ = task
        rs = check_random_state(self.random_state)
        params = {"kernel": self.kernel, "degree": self.degree, "random_state": rs.randint(0, 2**31 - 1)}
        params.update(self.sketch_params or {})
        self.sketch_ = KernelSketch(self.net, self.n_components, **params)
        self.sketch_.fit(X)
        if X_val is None:
            f = self.validation_fraction
            if not isinstance(f, numbers.Real) or not 0 < f < 1:
                raise ParameterError(f"validation_fraction must be in (0, 1), got {f!r}")
            idx = np.arange(X.shape[0])
            strat = y if task == "classification" else None
            try:
                tr, va = train_test_split(idx, test_size=f, random_state=rs.randint(0, 2**31 - 1), stratify=strat)
            except ValueError:
                tr, va = train_test_split(idx, test_size=f, random_state=rs.randint(0, 2**31 - 1))
            Z = self.sketch_.transform(X).astype(np.float64, copy=False)
            Ztr, ytr, Zva, yva = Z[tr], y[tr], Z[va], y[va]
        else:
            Ztr = self.sketch_.transform(X).astype(np.float64, copy=False)
            ytr = y
            Zva = self.sketch_.transform(X_val).astype(np.float64, copy=False)
            yva = np.asarray(y_val)
        if task == "classification":
            self.classes_ = np.unique(np.concatenate([ytr, yva]))
        Ytr = self._encode(ytr)
        scale = float(np.sum(Ztr * Ztr) / max(len(Ztr), 1)) or 1.0
        self.kernel_scale_ = scale
        lambdas = alphas * scale
        mu, ym = Ztr.mean(axis=0), Ytr.mean(axis=0)
        W = ridge_path(Ztr - mu, Ytr - ym, lambdas)
        scores = []
        for w in W:
            pred = (Zva - mu) @ w + ym
            scores.append(_score(task, pred, yva, getattr(self, "classes_", None)))
        self.validation_scores_ = np.array(scores)
        best = int(np.argmax(self.validation_scores_))  # ties: the smallest alpha
        self.alpha_ = float(alphas[best])
        if self.refit:
            Zall = np.vstack([Ztr, Zva])
            Yall = self._encode(np.concatenate([ytr, yva]))
            mu, ym = Zall.mean(axis=0), Yall.mean(axis=0)
            w = ridge_path(Zall - mu, Yall - ym, [lambdas[best]])[0]
        else:
            w = W[best]
        self.coef_ = w
        self.intercept_ = ym - mu @ w
        return self

    def _encode(self, y):
        if self.task_ == "classification":
            Y = -np.ones((len(y), len(self.classes_)))
            Y[np.arange(len(y)), np.searchsorted(self.classes_, y)] = 1.0
            return Y
        return _targets(y, "regression")[0]

    def decision_function(self, X):
        check_is_fitted(self, "coef_")
        Z = self.sketch_.transform(X).astype(np.float64, copy=False)
        return Z @ self.coef_ + self.intercept_

    def predict(self, X):
        P = self.decision_function(X)
        if self.task_ == "classification":
            return self.classes_[np.argmax(P, axis=1)]
        return P[:, 0] if P.shape[1] == 1 else P

    def score(self, X, y):
        """Accuracy (classification) or R² (regression)."""
        if self.task_ == "classification":
            return ClassifierMixin.score(self, X, y)
        return RegressorMixin.score(self, X, y)


def validated_kernel_ridge(K_tr, y_tr, K_va_tr, y_va, K_te_tr, task, alphas=DEFAULT_ALPHAS, K_all=None,
                           K_te_all=None, y_all=None):
    """Exact kernel ridge with alpha chosen on validation data — the reference the benchmark
    compares SketchRidge with (same protocol: relative ridge, centred targets and kernel).

    K_tr (n_tr, n_tr), K_va_tr (n_va, n_tr), K_te_tr (n_te, n_tr).  When ``K_all`` (the kernel on
    train+validation), ``K_te_all`` and ``y_all`` are given, the chosen alpha is refitted on all of
    them.  Returns (test predictions, chosen alpha, validation scores).
    """
    alphas = np.asarray(alphas, dtype=np.float64)

    classes_all = np.unique(np.concatenate([y_tr, y_va])) if task == "classification" else None

    def encode(y):
        if task == "classification":
            Y = -np.ones((len(y), len(classes_all)))
            Y[np.arange(len(y)), np.searchsorted(classes_all, y)] = 1.0
            return Y
        return _targets(y, task)[0]

    def solve(K, y, lams):
        Y = encode(y)
        # centring in feature space: K_c = H K H (H = I − 11ᵀ/n), the exact analogue of
        # centring the sketched features
        rm = K.mean(axis=0)
        Kc = K - rm[None, :] - rm[:, None] + rm.mean()
        ym = Y.mean(axis=0)
        s, V = np.linalg.eigh(Kc)
        s = np.maximum(s, 0.0)
        B = V.T @ (Y - ym)
        return [(V @ (B / (s + lam)[:, None]), rm, ym) for lam in lams]

    def predict(Kx, fit):
        a, rm, ym = fit
        Kxc = Kx - Kx.mean(axis=1, keepdims=True) - rm[None, :] + rm.mean()
        return Kxc @ a + ym

    scale = float(np.trace(K_tr)) / len(K_tr)
    fits = solve(K_tr, y_tr, alphas * scale)
    scores = [_score(task, predict(K_va_tr, fit), y_va, classes_all) for fit in fits]
    best = int(np.argmax(scores))
    if K_all is not None:
        pred = predict(K_te_all, solve(K_all, y_all, [alphas[best] * scale])[0])
    else:
        pred = predict(K_te_tr, fits[best])
    if task == "classification":
        pred = classes_all[np.argmax(pred, axis=1)]
    else:
        pred = pred[:, 0]
    return pred, float(alphas[best]), np.array(scores)
