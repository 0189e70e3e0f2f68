r"""The dual of an activation: k(q1, q2, c) = E[σ(u)σ(v)] and k̇ = E[σ'(u)σ'(v)].

(u, v) ~ N(0, [[q1, c], [c, q2]]), ρ = c/√(q1 q2).  A :class:`Dual` is either
*closed-form* (SymPy expressions, evaluated by generated NumPy code) or
*hermite* (the norm-aware series Σ_l r_l(q1) r_l(q2) ρ^l of MATH.md §2, with a
degree chosen to meet a tolerance and the achieved error reported).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import scipy.special
import sympy as sp

from . import hermite as H
from .symbols import c, q1, q2, rho, rho_to_c

CLOSED_FORM = "closed-form"
HERMITE = "hermite"

#: Default accuracy of the Hermite method: relative to √(k(q1,q1,q1) k(q2,q2,q2)).
DEFAULT_TOL = 1e-8
#: Variances over which a Hermite dual states its accuracy.
DEFAULT_Q_RANGE = (0.01, 50.0)
MAX_DEGREE = 1024

_NUMPY_MODULES = [{"erf": scipy.special.erf, "erfc": scipy.special.erfc}, "numpy"]


def as_arrays(a, b, cc) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Broadcast (q1, q2, c) to float64 and compute the clipped correlation ρ."""
    a, b, cc = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (a, b, cc)))
    if np.any(a < 0) or np.any(b < 0):
        raise ValueError("variances q1, q2 must be non-negative")
    s = np.sqrt(a * b)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(s > 0, np.clip(cc / np.where(s > 0, s, 1.0), -1.0, 1.0), 0.0)
    return a, b, cc, r


def lambdify_dual(expr: sp.Expr) -> Callable[..., np.ndarray]:
    """NumPy function f(q1, q2, c, rho) of a dual expression (a SymPy tree, never user text)."""
    f = sp.lambdify((q1, q2, c, rho), expr, modules=_NUMPY_MODULES, cse=True)

    def evaluate(a, b, cc, r):
        with np.errstate(divide="ignore", invalid="ignore"):
            out = f(a, b, cc, r)
        return np.broadcast_to(np.asarray(out, dtype=np.float64), r.shape).copy()

    return evaluate


@dataclass
class HermiteSeries:
    """Norm-aware Hermite series of σ with an adaptively chosen degree.

    ``f`` is σ as a NumPy function, ``kinks`` the x where σ is not smooth.  The
    degree for a set of variances is the smallest (doubling from 16) whose tail
    energy T_L(q)/E[σ_q²] and estimated NTK tail are ≤ ``tol`` at all of them,
    capped at ``max_degree`` (with a warning when the cap is hit).
    """

    f: Callable[[np.ndarray], np.ndarray]
    kinks: Sequence[float] = ()
    tol: float = DEFAULT_TOL
    max_degree: int = MAX_DEGREE

    def table(self, q: np.ndarray, degree: int | None = None) -> tuple[np.ndarray, float]:
        """Coefficients R[i, l] = r_l(q_i) at the chosen degree, and the error estimate."""
        q = np.atleast_1d(np.asarray(q, dtype=np.float64))
        if degree is not None:
            R, M = H.coefficient_table(self.f, degree, q, self.kinks)
            return R, float(self._tails(R, M, degree, q)[0])
        d = 16
        while True:
            R, M = H.coefficient_table(self.f, 2 * d, q, self.kinks)
            err_k, err_t = self._tails(R, M, d, q)
            if max(err_k, err_t) <= self.tol or 2 * d > self.max_degree:
                break
            d *= 2
        if max(err_k, err_t) > self.tol:
            # Use every coefficient we have; report the NNGP tail at that degree.
            d = 2 * d
            err_k = self._tails(R, M, d, q)[0]
            warnings.warn(
                f"Hermite series did not reach tol={self.tol:.1e} at degree {d} for variances up to "
                f"{q.max():.3g} (estimated relative error {err_k:.1e})", RuntimeWarning, stacklevel=3)
        return R[:, : d + 1], float(max(err_k, err_t) if d < R.shape[1] - 1 else err_k)

    @staticmethod
    def _tails(R: np.ndarray, M: np.ndarray, d: int, q: np.ndarray) -> tuple[float, float]:
        """Relative NNGP tail energy at degree d (exact up to quadrature) and NTK tail
        (estimated from the coefficients d+1 .. R's degree)."""
        scale = np.maximum(M, 1e-300)
        tail_k = np.maximum(M - np.sum(R[:, : d + 1] ** 2, axis=1), 0.0) / scale
        l = np.arange(R.shape[1])
        e = l * R**2
        tot = np.maximum(e.sum(axis=1), 1e-300)
        tail_t = e[:, d + 1:].sum(axis=1) / tot if R.shape[1] > d + 1 else np.zeros_like(tot)
        return float(np.max(tail_k)), float(np.max(tail_t))


@dataclass
class Dual:
    """The dual activation of σ, closed form or Hermite series.

    Attributes
    ----------
    method : ``"closed-form"`` or ``"hermite"``.
    rule : which rule produced it (``"catalog:relu"``, ``"polynomial"``, ``"hermite-quadrature"`` …).
    nngp, ntk : SymPy expressions in (q1, q2, c); ``None`` for the Hermite method.
    ntk_convention : ``"price"`` (k̇ = ∂k/∂c) or ``"zero-a.e."`` (σ' is 0 almost
        everywhere, e.g. sign and step; the layer passes no NTK, as in neural-tangents).
    error_estimate : bound on the relative error over ``q_range`` (0 for closed forms).
    degree : the Hermite degree that meets ``tol`` over ``q_range`` (None for closed forms).
    """

    method: str
    rule: str
    nngp_rho: sp.Expr | None = None
    ntk_rho: sp.Expr | None = None
    ntk_convention: str = "price"
    series: HermiteSeries | None = None
    q_range: tuple[float, float] = DEFAULT_Q_RANGE
    _cache: dict = field(default_factory=dict, repr=False)

    # -- public symbolic view -------------------------------------------------
    @property
    def nngp(self) -> sp.Expr | None:
        return None if self.nngp_rho is None else rho_to_c(self.nngp_rho)

    @property
    def ntk(self) -> sp.Expr | None:
        return None if self.ntk_rho is None else rho_to_c(self.ntk_rho)

    @cached_property
    def _stated(self) -> tuple[int | None, float]:
        if self.series is None:
            return None, 0.0
        qs = np.geomspace(*self.q_range, 9)
        R, err = self.series.table(qs)
        return R.shape[1] - 1, err

    @property
    def degree(self) -> int | None:
        return self._stated[0]

    @property
    def error_estimate(self) -> float:
        return self._stated[1]

    # -- numerics ---------------------------------------------------------------
    @cached_property
    def _k_fn(self):
        return lambdify_dual(self.nngp_rho)

    @cached_property
    def _t_fn(self):
        return lambdify_dual(self.ntk_rho)

    def _series_eval(self, which: str, a, b, cc, r) -> np.ndarray:
        both = np.concatenate([a.ravel(), b.ravel()])
        uq, inv = np.unique(both, return_inverse=True)
        R, _ = self.series.table(uq)
        R1 = R[inv[: a.size]].reshape(a.shape + (R.shape[1],))
        R2 = R[inv[a.size:]].reshape(b.shape + (R.shape[1],))
        if which == "nngp":
            return H.series_nngp(R1, R2, r)
        return H.series_ntk(R1, R2, r, np.sqrt(a * b))

    def evaluate(self, which: str, q1_, q2_, c_) -> np.ndarray:
        """k (``which="nngp"``) or k̇ (``"ntk"``) at broadcast arrays of (q1, q2, c)."""
        a, b, cc, r = as_arrays(q1_, q2_, c_)
        if self.method == HERMITE:
            return self._series_eval(which, a, b, cc, r)
        fn = self._k_fn if which == "nngp" else self._t_fn
        return fn(a, b, cc, r)

    def __getstate__(self):
        """Pickle without the lambdified functions (rebuilt on first use); see Activation."""
        state = self.__dict__.copy()
        for key in ("_k_fn", "_t_fn"):
            state.pop(key, None)
        state["_cache"] = {}
        return state
