r"""Predictions of infinite ensembles: the NNGP posterior and gradient descent on the NTK.

The functions mirror ``neural_tangents.predict`` (argument names, defaults, shapes), so
code moves over line by line; they run on NumPy/SciPy in float64.  See docs/predict.md.

With train kernel 𝒦 (NNGP K or NTK Θ, n × n), test–train kernel 𝒦_* (m × n), targets
Y (n × k) and N = Y.size, gradient flow on the mean squared loss ½N⁻¹‖f(X) − Y‖² with
learning rate η gives, at time t (τ = η t),

    mean_*(t) = 𝒦_* 𝒦⁻¹ (I − e^{−𝒦τ/N}) Y                         (→ 𝒦_* 𝒦⁻¹ Y as t → ∞)

and the output covariance over random initialisations, with Φ(τ) = 𝒦⁻¹(I − e^{−𝒦τ/N}):

    NNGP:  K_** − K_* Φ(2τ) K_*ᵀ
    NTK:   K_** + (Φ(τ)Θ_*ᵀ)ᵀ K (Φ(τ)Θ_*ᵀ) − (Θ_* Φ(τ) K_*ᵀ + transpose)

(Lee et al. 2019, "Wide neural networks of any depth evolve as linear models", eqs. 13–16).
At t = ∞ the NNGP case is the exact GP posterior.  The regulariser ``diag_reg`` adds
λ·I to the train kernel, with λ = diag_reg · tr(𝒦)/n unless ``diag_reg_absolute_scale``.

Numerics: t = ∞ uses a Cholesky factorisation (computed once per kernel); finite t one
symmetric eigendecomposition 𝒦 = V diag(λ) Vᵀ, reused for every t.  Eigenvalues ≤ 0
(round-off of a positive semi-definite kernel) are treated as null directions, where
gradient flow does not move: (1 − e^{−λτ/N})/λ is set to 0 there (neural-tangents
divides 0 by 0 when an eigenvalue is exactly 0).  A train kernel that is not positive
definite at t = ∞ raises :class:`SingularKernelError` with the regularisation to use —
never NaN.
"""
from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import scipy.linalg

from .errors import DualcalcError, InputError, ParameterError
from .network import Kernel, Network
from .warn import warn

__all__ = ["Gaussian", "SingularKernelError", "gp_inference", "gradient_descent_mse",
           "gradient_descent_mse_ensemble", "max_learning_rate"]


class SingularKernelError(DualcalcError, np.linalg.LinAlgError):
    """The (regularised) train kernel is not numerically positive definite."""


class Gaussian(NamedTuple):
    """A Gaussian over the test outputs: ``mean`` (m, k) and ``covariance`` (m, m), shared by
    the k outputs (with leading time axes for an array of times)."""

    mean: np.ndarray
    covariance: np.ndarray


_GETS = ("nngp", "ntk")


def _canonical_get(get) -> tuple[bool, tuple[str, ...]]:
    """(was a single string, tuple of names); None means both."""
    if get is None:
        return False, _GETS
    if isinstance(get, str):
        single, names = True, (get,)
    else:
        single, names = False, tuple(get)
    bad = [g for g in names if g not in _GETS]
    if bad or not names or len(set(names)) != len(names):
        raise ParameterError(f"get must be 'nngp', 'ntk' or a tuple of them, got {get!r}")
    return single, names


def _pack(single: bool, names: tuple[str, ...], out: dict):
    if single:
        return out[names[0]]
    return namedtuple("Gaussians", names)(*(out[g] for g in names))


def _matrix(k, g: str, what: str, required: bool = True) -> np.ndarray | None:
    """The ``g`` part of a kernel given as a Kernel/namedtuple (``.nngp``/``.ntk``) or an array."""
    if k is None:
        return None
    if not isinstance(k, np.ndarray) and hasattr(k, g):
        k = getattr(k, g)
        if k is None:
            if required:
                raise ParameterError(f"{what} has no {g!r} matrix (compute it with get=({g!r}, ...))")
            return None
    elif not isinstance(k, np.ndarray) and (hasattr(k, "nngp") or hasattr(k, "ntk")):
        raise ParameterError(f"{what} has no {g!r} attribute")
    try:
        A = np.asarray(k, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"{what} is not an array of numbers ({err})") from None
    if A.ndim != 2:
        raise InputError(f"{what} must be a 2-D kernel matrix, got shape {A.shape}")
    if not np.all(np.isfinite(A)):
        raise InputError(f"{what} ({g}) contains NaN or Inf")
    return A


def _targets(y_train, n: int) -> tuple[np.ndarray, bool]:
    """Y as (n, k) float64 and whether it was 1-D (a single output, returned 1-D)."""
    try:
        y = np.asarray(y_train, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"y_train is not an array of numbers ({err})") from None
    flat = y.ndim == 1
    if flat:
        y = y[:, None]
    if y.ndim != 2:
        raise InputError(f"y_train must be (n_train,) or (n_train, n_outputs), got shape {y.shape}")
    if y.shape[0] != n:
        raise InputError(f"y_train has {y.shape[0]} rows but the train kernel is {n} × {n}")
    if not np.all(np.isfinite(y)):
        raise InputError("y_train contains NaN or Inf")
    return y, flat


def _check_reg(diag_reg) -> float:
    if isinstance(diag_reg, bool) or not np.isscalar(diag_reg) or not np.isfinite(diag_reg) or diag_reg < 0:
        raise ParameterError(f"diag_reg must be a finite non-negative number, got {diag_reg!r}")
    return float(diag_reg)


def _regularised(A: np.ndarray, diag_reg: float, absolute: bool) -> np.ndarray:
    """A + λ I with λ = diag_reg·tr(A)/n (or diag_reg itself when ``absolute``)."""
    if A.shape[0] != A.shape[1]:
        raise InputError(f"the train kernel must be square, got shape {A.shape}")
    n = A.shape[0]
    lam = diag_reg if absolute else diag_reg * float(np.trace(A)) / n
    out = np.array(A, dtype=np.float64, copy=True)
    out[np.diag_indices(n)] += lam
    return out


class _Solver:
    """Cholesky factor of the regularised train kernel, for t = ∞.

    Numerically singular — not positive definite, or a pivot with p² ≤ n·ε·max diag (then
    (𝒦 + λI)⁻¹ has lost every digit) — raises :class:`SingularKernelError`; a condition
    number above 1e12 (estimated from the pivots) warns.
    """

    def __init__(self, A: np.ndarray, diag_reg: float, absolute: bool, g: str):
        Ar = _regularised(A, diag_reg, absolute)
        n = Ar.shape[0]
        top = max(float(np.max(np.abs(np.diag(Ar)))), 1e-300)
        try:
            self.cho = scipy.linalg.cho_factor(Ar, lower=False, check_finite=False)
            d = np.abs(np.diag(self.cho[0]))
            singular = float(d.min()) ** 2 <= n * np.finfo(np.float64).eps * top
        except np.linalg.LinAlgError:
            singular = True
        if singular:
            ev = scipy.linalg.eigvalsh(Ar, check_finite=False)
            scale = max(float(np.mean(np.diag(A))), 1e-300)
            suggest = max(1e-10, 10.0 * max(-ev[0], 0.0) / scale)
            raise SingularKernelError(
                f"the {g} train kernel{' plus diag_reg' if diag_reg else ''} is numerically singular "
                f"(eigenvalues from {ev[0]:.3g} to {ev[-1]:.3g}; repeated or nearly collinear training points?): "
                f"pass diag_reg ≥ {suggest:.1g} (relative to the mean diagonal), or remove duplicate training "
                "points") from None
        cond = (float(d.max()) / float(d.min())) ** 2  # a lower bound on the condition number
        if cond > 1e12:
            warn(f"the {g} train kernel is ill-conditioned (condition number ≳ {cond:.1e}): the predicted "
                 f"means and covariances may have lost up to {np.log10(cond):.0f} of their 16 digits; pass "
                 "diag_reg > 0 (e.g. 1e-6, relative to the mean diagonal) or remove near-duplicate training "
                 "points", RuntimeWarning, key=("ill-conditioned-train-kernel", g, round(float(np.log10(cond)))))

    def __call__(self, B: np.ndarray) -> np.ndarray:
        return scipy.linalg.cho_solve(self.cho, B, check_finite=False)


class _Eigen:
    """𝒦 + λI = V diag(w) Vᵀ, once; functions of it for any array of times."""

    def __init__(self, A: np.ndarray, diag_reg: float, absolute: bool, N: int):
        self.w, self.V = scipy.linalg.eigh(_regularised(A, diag_reg, absolute), check_finite=False)
        self.N = N

    def phi(self, tau: np.ndarray) -> np.ndarray:
        """(1 − e^{−wτ/N})/w per (time, eigenvalue), 0 where w ≤ 0; shape (T, n)."""
        w = self.w[None, :]
        pos = w > 0
        safe = np.where(pos, w, 1.0)
        with np.errstate(over="ignore", invalid="ignore"):
            out = -np.expm1(-safe * tau[:, None] / self.N) / safe
        return np.where(pos, out, 0.0)

    def decay(self, tau: np.ndarray) -> np.ndarray:
        """e^{−max(w, 0)τ/N}, shape (T, n)."""
        return np.exp(-np.maximum(self.w, 0.0)[None, :] * tau[:, None] / self.N)

    def apply(self, diag: np.ndarray, B: np.ndarray) -> np.ndarray:
        """V diag(d_t) Vᵀ B for every row d_t of ``diag``: shape (T, n, B.shape[1])."""
        C = self.V.T @ B
        return np.einsum("ij,tj,jk->tik", self.V, diag, C, optimize=True)


def _times(t, learning_rate: float) -> tuple[np.ndarray, tuple[int, ...]]:
    try:
        tt = np.asarray(t, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError(f"t must be a number or an array of numbers, got {t!r}") from None
    if np.any(np.isnan(tt)) or np.any(tt < 0):
        raise ParameterError("t must be non-negative (np.inf allowed)")
    return (tt * learning_rate).reshape(-1), tt.shape


def _check_lr(learning_rate) -> float:
    if isinstance(learning_rate, bool) or not np.isscalar(learning_rate) or not np.isfinite(learning_rate) \
            or learning_rate <= 0:
        raise ParameterError(f"learning_rate must be a positive number, got {learning_rate!r}")
    return float(learning_rate)


def _unflat(M: np.ndarray, flat: bool) -> np.ndarray:
    return M[..., 0] if flat else M


# -----------------------------------------------------------------------------------------------
def gp_inference(k_train_train, y_train, diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False):
    r"""Exact posterior of the infinite ensemble given kernels (``nt.predict.gp_inference``).

    ``k_train_train``: a :class:`~dualcalc.Kernel` (or any object with ``.nngp``/``.ntk``) or
    one (n, n) array used for whichever ``get``.  Returns
    ``predict_fn(get=None, k_test_train=None, k_test_test=None)``:

    * ``get``: "nngp", "ntk" or a tuple (None: both, a namedtuple ``Gaussians``);
    * mean  = 𝒦_* (𝒦 + λI)⁻¹ Y;
    * with ``k_test_test`` (its NNGP part is used): ``Gaussian(mean, covariance)``, NNGP
      K_** − K_*(K + λI)⁻¹K_*ᵀ, NTK K_** + Θ_*Θ⁻¹KΘ⁻¹Θ_*ᵀ − (Θ_*Θ⁻¹K_*ᵀ + transpose) — the
      NTK case needs the NNGP parts of ``k_train_train`` and ``k_test_train`` too;
    * ``k_test_train=None``: the train set itself, ``N(Y, 0)``.
    """
    diag_reg = _check_reg(diag_reg)
    first = _matrix(k_train_train, "nngp", "k_train_train", required=False)
    if first is None:
        first = _matrix(k_train_train, "ntk", "k_train_train")
    y, flat = _targets(y_train, first.shape[0])
    solvers: dict[str, _Solver] = {}
    alphas: dict[str, np.ndarray] = {}

    def solve(g: str, B: np.ndarray) -> np.ndarray:
        if g not in solvers:
            solvers[g] = _Solver(_matrix(k_train_train, g, "k_train_train"), diag_reg, diag_reg_absolute_scale, g)
        return solvers[g](B)

    def predict_fn(get=None, k_test_train=None, k_test_test=None):
        single, names = _canonical_get(get)
        out = {}
        for g in names:
            k_dd = _matrix(k_train_train, g, "k_train_train")
            if k_test_train is None:  # the train set: N(Y, 0)
                mean = y.copy()
                if k_test_test is not None:
                    out[g] = Gaussian(_unflat(mean, flat), np.zeros_like(k_dd))
                else:
                    out[g] = _unflat(mean, flat)
                continue
            k_td = _matrix(k_test_train, g, "k_test_train")
            if k_td.shape[1] != k_dd.shape[0]:
                raise InputError(f"k_test_train has {k_td.shape[1]} columns but there are {k_dd.shape[0]} "
                                 "training points")
            if g not in alphas:
                alphas[g] = solve(g, y)
            mean = k_td @ alphas[g]
            if k_test_test is None:
                out[g] = _unflat(mean, flat)
                continue
            K_td = _matrix(k_test_train, "nngp", "k_test_train")
            K_tt = _matrix(k_test_test, "nngp", "k_test_test")
            if K_tt.shape != (k_td.shape[0], k_td.shape[0]):
                raise InputError(f"k_test_test must be {k_td.shape[0]} × {k_td.shape[0]}, got {K_tt.shape}")
            if g == "nngp":
                cov = K_tt - K_td @ solve("nngp", K_td.T)
            else:
                if not all(hasattr(k, "nngp") and hasattr(k, "ntk") for k in (k_train_train, k_test_train)):
                    raise ParameterError("the NTK posterior covariance needs the NNGP and the NTK of the train-train "
                                         "and test-train kernels: pass dc.Kernel(nngp, ntk) objects, not arrays")
                K_dd = _matrix(k_train_train, "nngp", "k_train_train")
                A = solve("ntk", k_td.T)  # Θ⁻¹Θ_*ᵀ, (n, m)
                B = k_td @ solve("ntk", K_td.T)  # Θ_*Θ⁻¹K_*ᵀ, (m, m)
                cov = K_tt + A.T @ K_dd @ A - B - B.T
            out[g] = Gaussian(_unflat(mean, flat), cov)
        return _pack(single, names, out)

    return predict_fn


def gradient_descent_mse(k_train_train, y_train, learning_rate: float = 1.0, diag_reg: float = 0.0,
                         diag_reg_absolute_scale: bool = False):
    r"""Outputs of one network linearised around its initialisation, trained by gradient flow on
    the MSE loss (``nt.predict.gradient_descent_mse``).

    ``k_train_train``: the (n, n) NTK (array, or a Kernel whose ``.ntk`` is used).  Returns
    ``predict_fn(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None)``:

    * train set: f(t) = Y + e^{−Θτ/N}(f₀ − Y), τ = η t;
    * test set:  f_*(t) = f_*₀ − Θ_* Θ⁻¹(I − e^{−Θτ/N})(f₀ − Y)  (t = None: ∞, by Cholesky);
    * returns ``fx_train_t``, ``fx_test_t`` or both (``fx_train_0=None`` skips the train set),
      with the time axes of ``t`` in front.
    """
    learning_rate = _check_lr(learning_rate)
    diag_reg = _check_reg(diag_reg)
    K = _matrix(k_train_train, "ntk", "k_train_train")
    y, flat = _targets(y_train, K.shape[0])
    cache: dict[str, Any] = {}

    def predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None):
        if fx_train_0 is None and fx_test_0 is None:
            raise ParameterError("fx_train_0 and fx_test_0 are both None: nothing to predict")
        if fx_test_0 is not None and k_test_train is None:
            raise ParameterError("test predictions (fx_test_0 given) need k_test_train")
        f0 = None if fx_train_0 is None else np.broadcast_to(
            np.asarray(fx_train_0, dtype=np.float64).reshape(-1, 1) if np.ndim(fx_train_0) == 1
            else np.asarray(fx_train_0, dtype=np.float64), y.shape)
        ft0 = None
        k_td = None
        if fx_test_0 is not None:
            k_td = _matrix(k_test_train, "ntk", "k_test_train")
            ft0 = np.asarray(fx_test_0, dtype=np.float64)
            ft0 = np.broadcast_to(ft0.reshape(-1, 1) if ft0.ndim == 1 else ft0, (k_td.shape[0], y.shape[1]))
        rhs = y if f0 is None else y - f0  # Y − f₀
        if t is None:
            res_train = None if f0 is None else y.copy()
            res_test = None
            if ft0 is not None:
                if "cho" not in cache:
                    cache["cho"] = _Solver(K, diag_reg, diag_reg_absolute_scale, "ntk")
                res_test = ft0 + k_td @ cache["cho"](rhs)
        else:
            tau, tshape = _times(t, learning_rate)
            if "eig" not in cache:
                cache["eig"] = _Eigen(K, diag_reg, diag_reg_absolute_scale, y.size)
            E = cache["eig"]
            res_train = res_test = None
            if f0 is not None:
                res_train = (y[None] - E.apply(E.decay(tau), rhs)).reshape(tshape + y.shape)
            if ft0 is not None:
                res_test = (ft0[None] + np.einsum("mn,tnk->tmk", k_td, E.apply(E.phi(tau), rhs)))
                res_test = res_test.reshape(tshape + ft0.shape)
        res_train = None if res_train is None else _unflat(res_train, flat)
        res_test = None if res_test is None else _unflat(res_test, flat)
        if res_train is not None and res_test is not None:
            return res_train, res_test
        return res_test if res_train is None else res_train

    return predict_fn


def _kernel_caller(net, backend: str, block_size, out) -> Callable:
    """k(X1, X2, get) -> Kernel-like, from a dualcalc Network or a neural-tangents-style kernel_fn."""
    if isinstance(net, Network):
        def kern(X1, X2, get, train=False):
            opts: dict[str, Any] = {}
            if block_size is not None:
                opts["block_size"] = block_size
            if train and out is not None:
                opts["out"] = tuple(out[i] if g in get else None for i, g in enumerate(_GETS))
            return net.kernel(X1, X2, get=get, backend=backend, **opts)
        return kern
    if callable(net):
        if out is not None or block_size is not None:
            raise ParameterError("block_size and out apply to a dualcalc Network, not to a kernel_fn")

        def kern(X1, X2, get, train=False):
            return net(X1, X2, get)
        return kern
    raise ParameterError(f"expected a dualcalc Network (dc.serial(...)) or kernel_fn(x1, x2, get), got {net!r}")


def gradient_descent_mse_ensemble(net, x_train, y_train, learning_rate: float = 1.0, diag_reg: float = 0.0,
                                  diag_reg_absolute_scale: bool = False, *, backend: str = "auto",
                                  block_size: int | None = None, out: Sequence | None = None):
    r"""Mean and covariance of the infinite ensemble of networks trained by gradient flow on MSE
    (``nt.predict.gradient_descent_mse_ensemble``; see the module docstring for the formulas).

    ``net``: a :class:`~dualcalc.Network` (or any ``kernel_fn(x1, x2, get)`` returning an object
    with ``.nngp``/``.ntk``, e.g. neural-tangents' ``kernel_fn``).  ``backend``/``block_size``
    go to ``net.kernel``; ``out``: a pair (nngp, ntk) of preallocated (n, n) arrays (e.g.
    ``np.memmap``; None for one not wanted) that receive the train–train kernels.

    Returns ``predict_fn(t=None, x_test=None, get=None, compute_cov=False)``: ``t`` None is
    t = ∞ (Cholesky, no eigendecomposition), a number or an array of times (one
    eigendecomposition per train kernel, reused); ``x_test`` None means the train set.
    Only the kernel blocks the request needs are computed, each once: the train–train
    NNGP for "nngp" or a covariance, the NTK for "ntk", the test–test NNGP (its diagonal
    is not enough: the covariance is the full (m, m) matrix) only when ``compute_cov``.
    """
    learning_rate = _check_lr(learning_rate)
    diag_reg = _check_reg(diag_reg)
    kern = _kernel_caller(net, backend, block_size, out)
    y, flat = _targets(y_train, np.shape(x_train)[0])
    k_dd: dict[str, np.ndarray] = {}
    eig: dict[str, _Eigen] = {}

    class _Live:  # the train kernels computed so far, read by gp_inference when it needs them
        nngp = property(lambda self: k_dd.get("nngp"))
        ntk = property(lambda self: k_dd.get("ntk"))

    inf: dict[str, Any] = {}

    def train(need: tuple[str, ...]) -> Kernel:
        todo = tuple(g for g in need if g not in k_dd)
        if todo:
            k = kern(x_train, None, todo, train=True)
            for g in todo:
                k_dd[g] = _matrix(k, g, "the train-train kernel")
        return Kernel(k_dd.get("nngp"), k_dd.get("ntk"))

    def predict_fn(t=None, x_test=None, get=None, compute_cov: bool = False):
        single, names = _canonical_get(get)
        need = tuple(g for g in _GETS if g in names or (g == "nngp" and compute_cov))
        train(need)
        k_td = k_tt = None
        if x_test is not None:
            k = kern(x_test, x_train, need)
            k_td = Kernel(*(None if g not in need else _matrix(k, g, "the test-train kernel") for g in _GETS))
            if compute_cov:
                k_tt = _matrix(kern(x_test, None, ("nngp",)), "nngp", "the test-test kernel")
        if t is None:
            if "fn" not in inf:  # one gp_inference: its Cholesky factors are kept across calls
                inf["fn"] = gp_inference(_Live(), _unflat(y, flat), diag_reg, diag_reg_absolute_scale)
            res = inf["fn"](get=names, k_test_train=k_td,
                            k_test_test=(k_tt if x_test is not None else (True if compute_cov else None)))
            return _pack(single, names, res._asdict())
        tau, tshape = _times(t, learning_rate)
        res = {}
        for g in names:
            if g not in eig:
                eig[g] = _Eigen(k_dd[g], diag_reg, diag_reg_absolute_scale, y.size)
            E = eig[g]
            if k_td is None:  # the train set
                mean = y[None] - E.apply(E.decay(tau), y)
            else:
                mean = np.einsum("mn,tnk->tmk", k_td[_GETS.index(g)], E.apply(E.phi(tau), y))
            mean = _unflat(mean.reshape(tshape + mean.shape[1:]), flat)
            if not compute_cov:
                res[g] = mean
                continue
            Kn = k_dd["nngp"]
            if k_td is None:
                if g == "nngp":
                    w = np.maximum(E.w, 0.0)
                    cov = E.apply(w[None, :] * E.decay(2 * tau), np.eye(len(w)))
                else:
                    D = E.apply(E.decay(tau), np.eye(len(E.w)))  # e^{−Θτ/N}
                    cov = np.einsum("tmk,kl,tnl->tmn", D, Kn, D, optimize=True)
            else:
                Kt = k_td.nngp
                if g == "nngp":
                    cov = k_tt[None] - np.einsum("mn,tnl->tml", Kt, E.apply(E.phi(2 * tau), Kt.T))
                else:
                    Tt = k_td.ntk
                    A = E.apply(E.phi(tau), Tt.T)  # Θ⁻¹(I − e^{−Θτ/N})Θ_*ᵀ, (T, n, m)
                    B = np.einsum("mn,tnl->tml", Tt, E.apply(E.phi(tau), Kt.T))
                    cov = (k_tt[None] + np.einsum("tnm,nk,tkl->tml", A, Kn, A, optimize=True)
                           - B - np.swapaxes(B, 1, 2))
            res[g] = Gaussian(mean, cov.reshape(tshape + cov.shape[1:]))
        return _pack(single, names, res)

    return predict_fn


def max_learning_rate(k_train_train, y_train_size: int | None = None, momentum: float = 0.0,
                      eps: float = 1e-12) -> float:
    r"""Largest stable learning rate of (momentum) gradient descent on the MSE loss
    ½(n k)⁻¹‖f − Y‖²: η_max = 2(1 + momentum)·N / (λ_max(Θ) + eps), N = ``y_train_size``
    (default: the number of training points, one output) — ``nt.predict.max_learning_rate``."""
    K = _matrix(k_train_train, "ntk", "k_train_train")
    if K.shape[0] != K.shape[1]:
        raise InputError(f"the train kernel must be square, got shape {K.shape}")
    n = K.shape[0]
    lam = float(scipy.linalg.eigh(K, eigvals_only=True, subset_by_index=[n - 1, n - 1], check_finite=False)[-1])
    N = n if y_train_size is None else int(y_train_size)
    return 2.0 * (1.0 + float(momentum)) * N / (lam + eps)
