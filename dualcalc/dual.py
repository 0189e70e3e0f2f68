r"""The dual of an activation: k(q1, q2, c) = E[σ(u)σ(v)] and k̇ = E[σ'(u)σ'(v)].

(u, v) ~ N(0, [[q1, c], [c, q2]]), ρ = c/√(q1 q2).  A :class:`Dual` is either
*closed-form* (SymPy expressions, evaluated by generated NumPy code) or
*hermite* (the norm-aware series Σ_l r_l(q1) r_l(q2) ρ^l of docs/math.md §2, with a
degree chosen to meet a tolerance and the achieved error reported).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import scipy.special
import sympy as sp

from . import hermite as H
from .symbols import c, q1, q2, rho, rho_to_c
from .warn import warn

CLOSED_FORM = "closed-form"
HERMITE = "hermite"

#: Default accuracy of the Hermite tables a network uses (its kernel entries, layer by layer):
#: relative to √(k(q1,q1,q1) k(q2,q2,q2)).
DEFAULT_TOL = 1e-8
#: Accuracy of k and k̇ evaluated one by one (``act.nngp``, ``act.ntk``, ``Dual.evaluate``):
#: the activation's ``tol`` or this, whichever is smaller (a pointwise evaluation can afford
#: the higher degree; a network's n² entries use ``tol``).  Half of 1e-9, so that the error
#: on the diagonal, which equals the tail bound, stays below 1e-9 with quadrature noise.
EVAL_TOL = 5e-10
#: Variances over which a Hermite dual states its accuracy.
DEFAULT_Q_RANGE = (0.01, 50.0)
MAX_DEGREE = 16384
#: Past this degree the series is doubled further only while a doubling still divides the
#: error bound by ≥ 4 (super-algebraic decay: smooth σ, e.g. tanh at q = 100 needs ~8000;
#: x/√(1+x²) at q = 100 gains 11× from 1024 to 2048).
#: Algebraic decay (softsign's σ'' jumps at 0, ELU: T'_L ~ L^(−p), a factor 2^(−p) ≈ 0.4 per
#: doubling) stops here with the error stated, instead of paying up to 8× the degree for ~3×.
SLOW_DECAY_FROM = 2048

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
class SeriesTables:
    """Per-variance coefficient vectors of a Hermite dual at one degree.

    ``R[i, l] = r_l(q_i)`` for σ; ``Rd`` the same for the a.e. derivative σ' when σ
    jumps (then k̇ = Σ_l r'_l(q1) r'_l(q2) ρ^l); ``err_nngp``/``err_ntk`` the relative
    truncation errors at ``degree`` (maxima over the variances, see HermiteSeries).
    """

    R: np.ndarray
    Rd: np.ndarray | None
    degree: int
    err_nngp: float
    err_ntk: float


@dataclass
class HermiteSeries:
    """Norm-aware Hermite series of σ with an adaptively chosen degree.

    ``f`` is σ as a NumPy function, ``kinks`` the x where σ is not smooth, ``df`` the
    almost-everywhere derivative σ' (optional), ``jumps`` whether σ is discontinuous.

    Error estimates (relative to √(k(q1,q1,q1)·k(q2,q2,q2)), resp. the same for k̇):
    with T_L(q) = E[σ_q²] − Σ_{l≤L} r_l(q)² the tail energy,
    |k − k_L| ≤ √(T_L(q1) T_L(q2)) (Cauchy–Schwarz), an equality on the diagonal
    q1 = q2 = c.  So ``err_nngp = max_q T_L(q)/E[σ_q²]`` is both a bound and the
    error actually made at (q, q, q) for the worst q.  For k̇ (Mehler) the same holds
    with the weights l·r_l², whose total is q·E[σ'(√q g)²] (σ absolutely
    continuous), computed by quadrature from ``df``; without ``df`` the NTK tail is
    estimated from the coefficients up to the highest degree computed.  When σ
    jumps, k̇ is the a.e.-derivative dual, a series of its own (coefficients of σ').

    The degree is the smallest meeting ``tol`` for both (at every requested q),
    searched on coefficients computed at degrees 32, 64, … ≤ ``max_degree``; past the
    cap — or past :data:`SLOW_DECAY_FROM` once a doubling divides the bound by less than
    4 (algebraic decay) — the last degree is used and a warning (once per series,
    tolerance and octave of the largest variance) states the error reached.
    """

    f: Callable[[np.ndarray], np.ndarray]
    kinks: Sequence[float] = ()
    tol: float = DEFAULT_TOL
    max_degree: int = MAX_DEGREE
    df: Callable[[np.ndarray], np.ndarray] | None = None
    jumps: bool = False
    _warned: bool = field(default=False, repr=False)
    _memo: dict = field(default_factory=dict, repr=False)

    def table(self, q: np.ndarray, degree: int | None = None) -> tuple[np.ndarray, float]:
        """Coefficients R[i, l] = r_l(q_i) at the chosen degree, and the error estimate
        (max of the NNGP and NTK relative errors)."""
        t = self.tables(q, degree)
        return t.R, max(t.err_nngp, t.err_ntk)

    def tables(self, q: np.ndarray, degree: int | None = None, tol: float | None = None) -> SeriesTables:
        """σ's (and, when σ jumps, σ''s) coefficient tables with their error estimates;
        the degree meets ``tol`` (default: the series' own)."""
        q = np.atleast_1d(np.asarray(q, dtype=np.float64))
        tol = self.tol if tol is None else float(tol)
        key = (q.tobytes(), degree, tol)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        out = self._tables(q, degree, tol)
        if len(self._memo) > 64:
            self._memo.clear()
        self._memo[key] = out
        return out

    def _tables(self, q: np.ndarray, degree: int | None, tol: float) -> SeriesTables:
        M1 = None
        if self.df is not None and not self.jumps:
            M1 = H.coefficient_table(self.df, 0, q, self.kinks, fine=True)[1]
        D = degree if degree is not None else min(32, self.max_degree)
        while True:
            R, M = H.coefficient_table(self.f, D, q, self.kinks, fine=True)
            Rd = Md = None
            if self.jumps and self.df is not None:
                Rd, Md = H.coefficient_table(self.df, D, q, self.kinks, fine=True)
            tk = self._tail(R**2, M)
            if self.jumps:
                tt = self._tail(Rd**2, Md) if Rd is not None else np.zeros(D + 1)
            elif M1 is not None:
                tt = self._tail(np.arange(D + 1) * R**2, q * M1)
            else:
                tt = self._tail_estimate(R)
            if degree is not None:
                d = D
                break
            ok = np.flatnonzero((tk <= tol) & (tt <= tol))
            if ok.size and (M1 is not None or self.jumps or ok[0] <= D // 2):
                d = int(ok[0])
                break
            worst = np.maximum(tk, tt)
            slow = D >= SLOW_DECAY_FROM and worst[D] > 0.25 * worst[D // 2]
            if 2 * D > self.max_degree or slow:
                d = D
                self._warned = True
                # once per series, tolerance and octave of the largest variance: the error reached
                # grows with q, so a later call at larger variances states its own (softsign)
                decade = int(np.floor(np.log2(q.max()))) if q.max() > 0 else 0
                warn(
                    f"Hermite series did not reach tol={tol:.1e} at degree {D} for variances up to "
                    f"{q.max():.3g} (estimated relative error: NNGP {tk[D]:.1e}, NTK {tt[D]:.1e}"
                    + ("; its coefficients decay algebraically, as where σ or a derivative of σ jumps, so "
                       "higher degrees would gain little" if slow else "") + "); the "
                    "kernels are that accurate, not tol — accept it, or rescale the inputs/weights toward "
                    "smaller variances", RuntimeWarning, key=("hermite-cap", id(self), tol, decade))
                break
            D *= 2
        return SeriesTables(R=R[:, : d + 1], Rd=None if Rd is None else Rd[:, : d + 1], degree=d,
                            err_nngp=float(tk[d]), err_ntk=float(tt[d]))

    def derivative_at_zero(self) -> float:
        """σ'(0) from ``df`` (NaN without it): k̇(0, q, 0) = σ'(0)·E[σ'(√q g)].  Where σ has
        a kink at 0, the mean of the one-sided derivatives (the limit of E[σ'(√ε g)], ε → 0)."""
        if self.df is None:
            return float("nan")
        x = np.array([-1e-300, 1e-300]) if any(k == 0.0 for k in self.kinks) else np.zeros(1)
        with np.errstate(all="ignore"):
            v = np.broadcast_to(np.asarray(self.df(x), dtype=np.float64), x.shape)
        return float(np.mean(v))

    @staticmethod
    def _tail(E: np.ndarray, total: np.ndarray) -> np.ndarray:
        """max_i (total_i − Σ_{l≤d} E[i, l]) / total_i for every d (relative tail energies)."""
        tot = np.asarray(total, dtype=np.float64)
        safe = np.where(tot > 0, tot, 1.0)
        rest = np.maximum(tot[:, None] - np.cumsum(E, axis=1), 0.0) / safe[:, None]
        rest[tot <= 0] = 0.0
        return rest.max(axis=0)

    @staticmethod
    def _tail_estimate(R: np.ndarray) -> np.ndarray:
        """NTK tail without σ': from the coefficients computed (a lower estimate)."""
        e = np.arange(R.shape[1]) * R**2
        tot = np.maximum(e.sum(axis=1), 1e-300)
        return (np.maximum(tot[:, None] - np.cumsum(e, axis=1), 0.0) / tot[:, None]).max(axis=0)


@dataclass
class Dual:
    """The dual activation of σ, closed form or Hermite series.

    Attributes
    ----------
    method : ``"closed-form"`` or ``"hermite"``.
    rule : which rule produced it (``"catalog:relu"``, ``"polynomial"``, ``"piecewise-polynomial"``,
        ``"gaussian-class"``, ``"erf-class"``, ``"hermite-quadrature"`` …).
    nngp, ntk : SymPy expressions in (q1, q2, c); ``None`` for the Hermite method.
    ntk_convention : ``"price"`` (k̇ = ∂k/∂c) or ``"zero-a.e."`` (σ' holds a delta, e.g. sign
        and step: k̇ = E[σ'σ'] with σ' the a.e. derivative — 0 for sign and step — as in
        neural-tangents; ``price_ntk`` gives ∂k/∂c instead).
    error_estimate : bound on the relative error over ``q_range`` (0 for closed forms); the
        NNGP and NTK parts are in ``error_estimates``.
    degree : the Hermite degree that meets ``tol`` over ``q_range`` (None for closed forms).
    domain : expressions in (q1, q2, c) that must be > 0 for the expectation to exist (σ
        growing like exp(γx²)); NaN is returned outside, with a warning.  ``q_max``: the largest
        variance with k(q, q, q) finite (None: unbounded).
    """

    method: str
    rule: str
    nngp_rho: sp.Expr | None = None
    ntk_rho: sp.Expr | None = None
    ntk_convention: str = "price"
    series: HermiteSeries | None = None
    q_range: tuple[float, float] = DEFAULT_Q_RANGE
    domain: tuple = ()
    q_max: float | None = None
    detail: str = ""
    _cache: dict = field(default_factory=dict, repr=False)

    # -- public symbolic view -------------------------------------------------
    @property
    def nngp(self) -> sp.Expr | None:
        return None if self.nngp_rho is None else rho_to_c(self.nngp_rho)

    @property
    def ntk(self) -> sp.Expr | None:
        return None if self.ntk_rho is None else rho_to_c(self.ntk_rho)

    @cached_property
    def price_rho(self) -> sp.Expr | None:
        """∂k/∂c (Price's theorem) with ρ kept as a symbol: ∂/∂c + (1/√(q1 q2))·∂/∂ρ."""
        if self.nngp_rho is None:
            return None
        k = self.nngp_rho
        return sp.diff(k, c) + sp.diff(k, rho) / sp.sqrt(q1 * q2)

    @property
    def price_ntk(self) -> sp.Expr | None:
        """∂k/∂c as an expression in (q1, q2, c); equals ``ntk`` unless σ jumps (then it
        is infinite on the diagonal)."""
        return None if self.price_rho is None else rho_to_c(self.price_rho)

    @cached_property
    def _stated(self) -> SeriesTables | None:
        if self.series is None:
            return None
        qs = np.geomspace(*self.q_range, 9)
        return self.series.tables(qs, tol=self.eval_tol)

    def _grid_degree(self, qmax: float) -> int:
        """Degree meeting :attr:`eval_tol` at the stated grid's variances up to the first ≥ qmax."""
        qs = np.geomspace(*self.q_range, 9)
        k = min(int(np.searchsorted(qs, qmax * (1 - 1e-12))), qs.size - 1)
        if k == qs.size - 1:
            return self.degree
        return self.series.tables(qs[: k + 1], tol=self.eval_tol).degree

    @property
    def eval_tol(self) -> float | None:
        """Tolerance of pointwise evaluation: min(the series' tol, :data:`EVAL_TOL`)."""
        return None if self.series is None else min(self.series.tol, EVAL_TOL)

    @property
    def degree(self) -> int | None:
        t = self._stated
        return None if t is None else t.degree

    @property
    def error_estimate(self) -> float:
        t = self._stated
        return 0.0 if t is None else max(t.err_nngp, t.err_ntk)

    @property
    def error_estimates(self) -> dict[str, float]:
        """Relative error bounds over ``q_range``: {"nngp": …, "ntk": …} (0 for closed forms)."""
        t = self._stated
        return {"nngp": 0.0, "ntk": 0.0} if t is None else {"nngp": t.err_nngp, "ntk": t.err_ntk}

    # -- numerics ---------------------------------------------------------------
    @cached_property
    def _k_fn(self):
        return lambdify_dual(self.nngp_rho)

    @cached_property
    def _t_fn(self):
        return lambdify_dual(self.ntk_rho)

    @cached_property
    def _p_fn(self):
        return lambdify_dual(self.price_rho)

    @cached_property
    def _domain_fns(self):
        return [lambdify_dual(d) for d in self.domain]

    def _series_eval(self, which: str, a, b, cc, r) -> np.ndarray:
        both = np.concatenate([a.ravel(), b.ravel()])
        uq, inv = np.unique(both, return_inverse=True)
        lo, hi = self.q_range
        if uq.size and uq[0] >= lo * (1 - 1e-12) and uq[-1] <= hi * (1 + 1e-12):
            # the degree meeting eval_tol on the stated grid up to the first point ≥ the largest
            # variance (≤ the stated degree, so error ≤ error_estimates): small variances need far
            # fewer terms (tanh: ~3700 at q = 50), which whole-array Horner evaluation pays for
            t = self.series.tables(uq, degree=self._grid_degree(uq[-1]))
        else:  # outside q_range: a degree chosen for these variances
            t = self.series.tables(uq, tol=self.eval_tol)
        use_d = which == "ntk" and self.series.jumps and t.Rd is not None
        R = t.Rd if use_d else t.R
        R1 = R[inv[: a.size]].reshape(a.shape + (R.shape[1],))
        R2 = R[inv[a.size:]].reshape(b.shape + (R.shape[1],))
        if which == "nngp" or use_d:
            return H.series_nngp(R1, R2, r)
        out = H.series_ntk(R1, R2, r, np.sqrt(a * b))
        zero = (a == 0) | (b == 0)
        if zero.any() and self.series.df is not None:
            # A zero variance makes u ≡ 0: k̇ = σ'(0)·E[σ'(v)], E[σ'(√q g)] = r_1(q)/√q (Stein);
            # the Mehler quotient r_l(q1) r_l(q2)/√(q1 q2) is 0/0 there.
            d0 = self.series.derivative_at_zero()
            with np.errstate(divide="ignore", invalid="ignore"):
                m1 = np.where(a > 0, R1[..., 1] / np.sqrt(np.where(a > 0, a, 1.0)), d0) if R1.shape[-1] > 1 \
                    else np.full(a.shape, d0)
                m2 = np.where(b > 0, R2[..., 1] / np.sqrt(np.where(b > 0, b, 1.0)), d0) if R2.shape[-1] > 1 \
                    else np.full(b.shape, d0)
            out = np.where(zero, m1 * m2, out)
        return out

    def evaluate(self, which: str, q1_, q2_, c_) -> np.ndarray:
        """k (``which="nngp"``), k̇ (``"ntk"``) or ∂k/∂c (``"price"``) at broadcast (q1, q2, c)."""
        if which not in ("nngp", "ntk", "price"):
            raise ValueError(f"which must be 'nngp', 'ntk' or 'price', got {which!r}")
        a, b, cc, r = as_arrays(q1_, q2_, c_)
        if self.method == HERMITE:
            return self._series_eval(which, a, b, cc, r)
        fn = {"nngp": lambda: self._k_fn, "ntk": lambda: self._t_fn, "price": lambda: self._p_fn}[which]()
        out = fn(a, b, cc, r)
        if self.domain:
            bad = np.zeros(out.shape, dtype=bool)
            for g in self._domain_fns:
                bad |= ~(g(a, b, cc, r) > 0)
            if bad.any():
                out[bad] = np.nan
                warn(
                    f"dual ({self.rule}) evaluated where the Gaussian expectation does not exist (σ grows like "
                    f"exp(γx²); k(q, q, q) needs q < {self.q_max:.4g}): NaN returned there — keep the variances "
                    "below that bound (smaller W_std/b_std or inputs)", RuntimeWarning,
                    key=("domain", self.rule, self.q_max))
        return out

    def __getstate__(self):
        """Pickle without the lambdified functions (rebuilt on first use); see Activation."""
        state = self.__dict__.copy()
        for key in ("_k_fn", "_t_fn", "_p_fn", "_domain_fns"):
            state.pop(key, None)
        state["_cache"] = {}
        return state
