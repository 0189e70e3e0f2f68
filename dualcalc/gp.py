r"""scikit-learn interop: the network's NNGP/NTK as a GP kernel, and kernel ridge on it.

* :class:`GPKernel` — a ``sklearn.gaussian_process.kernels.Kernel`` equal to
  ``net.kernel(X, Y).nngp`` (or ``.ntk``), for ``GaussianProcessRegressor``/``Classifier``
  and for composition: ``ConstantKernel() * GPKernel(net) + WhiteKernel()``.
* :class:`KernelRegressor` — exact kernel ridge regression f(x) = k(x, X)(K + λI)⁻¹Y on
  the NTK (the t = ∞ mean of the infinite ensemble trained by gradient descent with
  ``diag_reg``) or the NNGP (the GP posterior mean), λ chosen by cross-validation.

Hyperparameters: the network's W_std/b_std are *fixed* (not in ``theta``): the gradient of
the kernel with respect to an inner layer's weight scale needs ∂k/∂q of every dual, which
dualcalc does not derive.  An overall scale and the noise are hyperparameters of
``ConstantKernel``/``WhiteKernel``; for b_std = 0 in the last layer, ``ConstantKernel`` is
exactly the last layer's W_std².  See docs/predict.md.
"""
from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.gaussian_process.kernels import Kernel as _SkKernel
from sklearn.model_selection import check_cv
from sklearn.utils.validation import check_is_fitted, validate_data

from .errors import ParameterError
from .network import Network, _has_spatial_layers, recursion_plan, validate_inputs
from .predict import SingularKernelError, _Solver

__all__ = ["GPKernel", "KernelRegressor"]


def _check_net(net, get) -> None:
    if not isinstance(net, Network):
        raise ParameterError(f"expected a dualcalc Network (dc.serial(...)), got {net!r}")
    if get not in ("nngp", "ntk"):
        raise ParameterError(f"get must be 'nngp' or 'ntk', got {get!r}")


class _KernelCache:
    """The last few kernel matrices by input content: the GP optimiser calls the kernel on the same
    X at every step, and with fixed W_std/b_std the matrix does not change.  Shared by clones."""

    def __init__(self, size: int = 4):
        self.size = size
        self.data: OrderedDict = OrderedDict()

    @staticmethod
    def key(*arrays) -> tuple:
        h = hashlib.blake2b(digest_size=16)
        for a in arrays:
            if a is None:
                h.update(b"none")
            else:
                h.update(str(a.shape).encode())
                h.update(np.ascontiguousarray(a).tobytes())
        return h.digest(),

    def get(self, key):
        hit = self.data.get(key)
        if hit is not None:
            self.data.move_to_end(key)
        return hit

    def put(self, key, value) -> None:
        self.data[key] = value
        while len(self.data) > self.size:
            self.data.popitem(last=False)


class GPKernel(_SkKernel):
    r"""The network's infinite-width NNGP (``get="nngp"``) or NTK as a scikit-learn kernel.

    ``GPKernel(net)(X, Y)`` is ``net.kernel(X, Y, get=get).<get>`` (float64; ``backend`` as in
    ``net.kernel``).  It has no free hyperparameters (``theta`` is empty; W_std/b_std are
    fixed — see the module docstring), so ``eval_gradient=True`` returns a gradient of shape
    (n, n, 0); combine it with ``ConstantKernel`` (scale) and ``WhiteKernel`` (noise), whose
    hyperparameters the GP optimiser then fits.  Not stationary.  ``diag(X)`` costs O(n·depth)
    (the per-point variances of the recursion), not a full matrix.
    """

    def __init__(self, net, get: str = "nngp", backend: str = "auto"):
        _check_net(net, get)
        self.net = net
        self.get = get
        self.backend = backend
        self._cache = _KernelCache()

    def __sklearn_clone__(self):
        # the network is immutable: share it (and the matrices already computed) instead of a
        # deep copy, which would re-derive Hermite duals at every step of the GP optimiser
        new = type(self)(self.net, self.get, self.backend)
        new._cache = self._cache
        return new

    def __call__(self, X, Y=None, eval_gradient: bool = False):
        if eval_gradient and Y is not None:
            raise ValueError("gradient can only be evaluated when Y is None")
        X = np.asarray(X)
        Y = None if Y is None else np.asarray(Y)
        key = _KernelCache.key(X, Y) + (self.get, self.backend)
        K = self._cache.get(key)
        if K is None:
            K = getattr(self.net.kernel(X, Y, get=self.get, backend=self.backend), self.get)
            self._cache.put(key, K)
        K = K.copy()  # scikit-learn adds alpha to the diagonal in place
        if eval_gradient:
            return K, np.empty((K.shape[0], K.shape[0], 0))
        return K

    def diag(self, X):
        X = np.asarray(X)
        if _has_spatial_layers(self.net):
            return np.diag(self(X))
        X, _ = validate_inputs(X, None)
        plan = recursion_plan(self.net, X, None, ntk_diag=self.get == "ntk")
        return np.array(plan.qx_out if self.get == "nngp" else plan.tx_out, dtype=np.float64)

    def is_stationary(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"GPKernel({self.net!r}, get={self.get!r})"


class KernelRegressor(RegressorMixin, BaseEstimator):
    r"""Exact kernel ridge regression on the network's NTK (default) or NNGP, ridge by cross-validation.

    f(x) = k(x, X)(K + λI)⁻¹Y with λ = α·mean(diag K) (``alpha_absolute_scale=False``, the
    ``diag_reg`` convention of :mod:`dualcalc.predict`) or λ = α.  With ``get="ntk"`` this is
    the t = ∞ mean of the infinite ensemble trained by gradient descent with ``diag_reg=α``;
    with ``get="nngp"`` the GP posterior mean.  No intercept: the network's biases model
    constants (centre y yourself if you want one).

    ``alphas``: one value (no search) or candidates; ``cv=None`` picks α by exact leave-one-out
    error (one eigendecomposition of K for all candidates: residual_i = c_i / [(K+λI)⁻¹]_ii),
    an int or a splitter by k-fold mean squared error on sub-blocks of the one train kernel.
    Fitted: ``alpha_``, ``cv_errors_`` (mean squared error per candidate), ``dual_coef_``,
    ``X_fit_``.
    """

    def __init__(self, net, get: str = "ntk", alphas=(1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0), cv=None,
                 alpha_absolute_scale: bool = False, backend: str = "auto"):
        self.net = net
        self.get = get
        self.alphas = alphas
        self.cv = cv
        self.alpha_absolute_scale = alpha_absolute_scale
        self.backend = backend

    def _kernel(self, X, Y=None) -> np.ndarray:
        return getattr(self.net.kernel(X, Y, get=self.get, backend=self.backend), self.get)

    def fit(self, X, y):
        _check_net(self.net, self.get)
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        alphas = np.atleast_1d(np.asarray(self.alphas, dtype=np.float64)).ravel()
        if alphas.size == 0 or not np.all(np.isfinite(alphas)) or np.any(alphas < 0):
            raise ParameterError(f"alphas must be finite non-negative numbers, got {self.alphas!r}")
        Y = y.reshape(len(y), -1)
        K = self._kernel(X)
        scale = 1.0 if self.alpha_absolute_scale else float(np.mean(np.diag(K)))
        if alphas.size == 1:
            errors = np.array([np.nan])
        elif self.cv is None:
            errors = self._loo_errors(K, Y, alphas * scale)
        else:
            errors = self._kfold_errors(K, Y, alphas * scale, X, y)
        best = 0 if alphas.size == 1 else int(np.nanargmin(errors)) if np.isfinite(errors).any() else None
        if best is None:
            raise SingularKernelError("every candidate ridge leaves the train kernel numerically singular; "
                                      "give larger alphas")
        self.alpha_ = float(alphas[best])
        self.cv_errors_ = errors
        self.dual_coef_ = _Solver(K, self.alpha_, self.alpha_absolute_scale, self.get)(Y)
        self.X_fit_ = X
        self._y_1d = y.ndim == 1
        return self

    @staticmethod
    def _loo_errors(K, Y, lams) -> np.ndarray:
        w, V = scipy.linalg.eigh(K, check_finite=False)
        VtY = V.T @ Y
        tiny = Y.shape[0] * np.finfo(np.float64).eps * max(float(w[-1]), 1e-300)
        out = np.empty(lams.size)
        for i, lam in enumerate(lams):
            d = w + lam
            if d.min() <= tiny:  # numerically singular at this ridge
                out[i] = np.inf
                continue
            C = V @ (VtY / d[:, None])
            Ginv_diag = np.einsum("ij,j,ij->i", V, 1.0 / d, V)
            out[i] = float(np.mean((C / Ginv_diag[:, None]) ** 2))
        return out

    def _kfold_errors(self, K, Y, lams, X, y) -> np.ndarray:
        splitter = check_cv(self.cv)
        out = np.zeros(lams.size)
        with warnings.catch_warnings():  # small candidate ridges are expected to be ill-conditioned
            warnings.simplefilter("ignore", RuntimeWarning)
            for tr, te in splitter.split(X, y):
                self._fold(K, Y, lams, tr, te, out)
        return out / Y.size

    def _fold(self, K, Y, lams, tr, te, out) -> None:
        """Add one fold's squared test errors for every ridge to ``out`` (inf: singular)."""
        Ktr, Kte = K[np.ix_(tr, tr)], K[np.ix_(te, tr)]
        for i, lam in enumerate(lams):
            if not np.isfinite(out[i]):
                continue
            try:
                coef = _Solver(Ktr, lam, True, self.get)(Y[tr])
            except SingularKernelError:
                out[i] = np.inf
                continue
            out[i] += float(np.sum((Kte @ coef - Y[te]) ** 2))

    def predict(self, X):
        check_is_fitted(self, "dual_coef_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        F = self._kernel(X, self.X_fit_) @ self.dual_coef_
        return F[:, 0] if self._y_1d else F
