r"""An independent quadrature oracle for dual activations.

Used by ``dualcalc catalog build`` (and the tests) to check every dual against
the definition, never against another formula:

    k(q1, q2, c)  = E[σ(u) σ(v)],     (u, v) ~ N(0, [[q1, c], [c, q2]])
    k̇(q1, q2, c)  = E[σ'(u) σ'(v)]

The pair is written in conditional form, u = √q1·g1 and
v = √q2·(ρ g1 + √(1−ρ²) g2) with g1, g2 independent standard normals, and the
two Gaussian integrals are done by composite Gauss–Legendre panels (unit width
on [−L, L]).  Panel edges are placed at the kinks of σ: for the outer variable
at the kinks of σ(u) (and, for ρ → ±1, of the inner integral's limit
σ(√q2 ρ g1)); for the inner variable, per outer node, at the points where
v crosses a kink.  So piecewise-smooth activations (ReLU, ELU, abs, ...) are
integrated to round-off.  The half-width L grows until σ(√q t)² φ(t) has
decayed to nothing at ±L, or the integral is declared divergent.

σ' is SymPy's derivative of σ with Dirac deltas dropped (σ' = 0 almost
everywhere for jumps; the convention of neural-tangents and of dualcalc's
``ntk_convention = "zero-a.e."``).

Nothing here reads a dual formula, a Hermite table or a catalog ``[dual]``
section: it only needs σ as a function and its kink locations.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import sympy as sp

from .errors import DivergentError

#: Gauss–Legendre nodes per unit panel.
GL_NODES = 16
_GL_X, _GL_W = np.polynomial.legendre.leggauss(GL_NODES)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_HALF_WIDTHS = (10.0, 14.0, 20.0, 28.0, 34.0, 40.0, 48.0, 56.0, 64.0, 80.0)

#: (q1, q2, c) at which ``verify_activation`` compares a dual with the oracle:
#: several variances, positive and negative correlations, and three diagonals.
VERIFY_POINTS: tuple[tuple[float, float, float], ...] = (
    (0.5, 0.5, 0.2),
    (1.0, 1.0, 0.5),
    (0.7, 1.9, 0.55),
    (2.0, 2.0, -1.2),
    (1.5, 0.8, 0.95 * math.sqrt(1.5 * 0.8)),
    (1.0, 2.0, -0.3),
    (0.5, 0.5, 0.5),
    (1.0, 1.0, 1.0),
    (2.0, 2.0, 2.0),
)
#: Error floor accepted for any dual (the oracle itself is good to ~1e-12 on smooth
#: and piecewise-smooth σ; a wrong closed form is typically off by 1e-3 or more).
VERIFY_TOL = 1e-7


class OracleError(DivergentError):
    """The oracle integral does not exist or could not be computed."""


# ---------------------------------------------------------------------------------------------
# quadrature
# ---------------------------------------------------------------------------------------------
def _panel_rule(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of Gauss–Legendre panels between sorted ``edges`` (last axis).

    ``edges`` has shape (..., m); the result has shape (..., (m−1)·GL_NODES).
    Zero-width panels (duplicated edges) get zero weight.
    """
    a, b = edges[..., :-1, None], edges[..., 1:, None]
    half = (b - a) / 2.0
    t = (a + b) / 2.0 + half * _GL_X
    w = half * _GL_W
    shape = edges.shape[:-1] + (-1,)
    return t.reshape(shape), w.reshape(shape)


def _edges(L: float, breakpoints: Sequence[float] = ()) -> np.ndarray:
    base = np.arange(-L, L + 0.5, 1.0)
    extra = [b for b in breakpoints if np.isfinite(b) and -L < b < L]
    e = np.unique(np.concatenate([base, np.asarray(extra, dtype=np.float64)]))
    return e


def _eval(f: Callable[[np.ndarray], np.ndarray], t: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.broadcast_to(np.asarray(f(t), dtype=np.float64), np.shape(t))


def _weighted(fv: np.ndarray, w: np.ndarray) -> np.ndarray:
    """fv·w with 0 where the weight vanishes (no inf·0 = NaN at far nodes)."""
    with np.errstate(all="ignore"):
        out = fv * w
    return np.where(w == 0.0, 0.0, out)


def _gauss_weights(t: np.ndarray, w: np.ndarray) -> np.ndarray:
    with np.errstate(under="ignore"):
        return w * np.exp(-0.5 * t * t) * _INV_SQRT_2PI


def half_width(f: Callable[[np.ndarray], np.ndarray], q: float, kinks: Sequence[float] = ()) -> float:
    """Smallest L in a ladder such that σ(√q t)² φ(t) is negligible for |t| ≥ L.

    Raises :class:`OracleError` when no L up to 80 suffices (E[σ²] diverges).
    """
    s = math.sqrt(q)
    for L in _HALF_WIDTHS:
        t, w = _panel_rule(_edges(L, [k / s for k in kinks] if s > 0 else ()))
        root_w = np.sqrt(_gauss_weights(t, w))
        fw = _weighted(_eval(f, s * t), root_w)  # f·√w before squaring: no overflow of f²
        with np.errstate(all="ignore"):
            m = float(np.sum(fw * fw))
        probe = L + np.linspace(0.0, 4.0, 17)
        probe = np.concatenate([probe, -probe])
        with np.errstate(all="ignore"):
            tail = (np.abs(_eval(f, s * probe)) * np.exp(-0.25 * probe**2)) ** 2 * _INV_SQRT_2PI
        if np.all(np.isfinite(tail)) and math.isfinite(m) and float(np.max(tail)) * 16.0 <= 1e-17 * max(m, 1e-300):
            return L
        if np.all(np.isfinite(tail)) and float(np.max(tail)) == 0.0:
            return L
    raise OracleError(f"E[σ(u)²] does not converge at variance q = {q:g}: the integrand has not "
                      f"decayed at |u| = {s * _HALF_WIDTHS[-1]:.3g}")


def expectation_1d(f: Callable[[np.ndarray], np.ndarray], q: float, kinks: Sequence[float] = (),
                   L: float | None = None) -> float:
    """E[f(u)], u ~ N(0, q)."""
    if q == 0.0:
        return float(_eval(f, np.zeros(1))[0])
    s = math.sqrt(q)
    L = half_width(f, q, kinks) if L is None else L
    t, w = _panel_rule(_edges(L, [k / s for k in kinks]))
    val = float(np.sum(_weighted(_eval(f, s * t), _gauss_weights(t, w))))
    if not math.isfinite(val):
        raise OracleError(f"E[f(u)] is not finite at variance q = {q:g}")
    return val


def expectation_2d(f: Callable[[np.ndarray], np.ndarray], g: Callable[[np.ndarray], np.ndarray],
                   q1: float, q2: float, c: float, kinks: Sequence[float] = (),
                   kinks_g: Sequence[float] | None = None, L: float | None = None) -> float:
    """E[f(u) g(v)] for (u, v) ~ N(0, [[q1, c], [c, q2]]) by nested panel quadrature.

    ``kinks`` are the x where f is not smooth (``kinks_g`` for g, default the same).
    """
    q1, q2, c = float(q1), float(q2), float(c)
    if q1 < 0 or q2 < 0:
        raise ValueError("variances must be non-negative")
    kinks_f = tuple(kinks)
    kinks_g = kinks_f if kinks_g is None else tuple(kinks_g)
    if q1 == 0.0:
        return float(_eval(f, np.zeros(1))[0]) * expectation_1d(g, q2, kinks_g, L)
    if q2 == 0.0:
        return float(_eval(g, np.zeros(1))[0]) * expectation_1d(f, q1, kinks_f, L)
    s1, s2 = math.sqrt(q1), math.sqrt(q2)
    rho = c / (s1 * s2)
    if abs(rho) > 1.0 + 1e-12:
        raise ValueError(f"|c| must be ≤ √(q1 q2); got ρ = {rho:.6g}")
    rho = max(-1.0, min(1.0, rho))
    if L is None:
        L = max(half_width(f, q1, kinks_f), half_width(g, q2, kinks_g))
    sr = math.sqrt(max(0.0, 1.0 - rho * rho))
    if sr < 1e-7:  # v = ±√q2 g1: one-dimensional
        brk = [k / s1 for k in kinks_f] + ([k / (s2 * rho) for k in kinks_g] if rho != 0 else [])
        t, w = _panel_rule(_edges(L, brk))
        root_w = np.sqrt(_gauss_weights(t, w))  # (f·√w)(g·√w): no overflow of f·g far out
        with np.errstate(all="ignore"):
            val = float(np.sum(_weighted(_eval(f, s1 * t), root_w) * _weighted(_eval(g, s2 * np.sign(rho) * t), root_w)))
    else:
        outer_brk = [k / s1 for k in kinks_f]
        if rho != 0.0:
            # The inner integral is a Gaussian smoothing of g over a width sr/|ρ| (in g1) around
            # each kink image: when ρ → ±1 it is a steep but smooth step there; grade the panels.
            width = sr / abs(rho)
            for k in kinks_g:
                b = k / (s2 * rho)
                outer_brk.append(b)
                if width < 1.0:
                    outer_brk += [b + sgn * width * m for m in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0) for sgn in (-1, 1)]
        t1, w1 = _panel_rule(_edges(L, outer_brk))
        W1 = _gauss_weights(t1, w1)
        keep = W1 != 0.0
        t1, W1 = t1[keep], W1[keep]
        mu = s2 * rho * t1  # conditional mean of v given g1
        sd = s2 * sr  # conditional standard deviation of v
        base = np.arange(-L, L + 0.5, 1.0)
        if kinks_g:
            kt = (np.asarray(kinks_g, dtype=np.float64)[None, :] - mu[:, None]) / sd
            kt = np.clip(kt, -L, L)
            edges = np.sort(np.concatenate([np.broadcast_to(base, (t1.size, base.size)), kt], axis=1), axis=1)
        else:
            edges = base[None, :]
        t2, w2 = _panel_rule(edges)
        W2 = _gauss_weights(t2, w2)
        inner = np.sum(_weighted(_eval(g, mu[:, None] + sd * t2), W2), axis=1)
        val = float(np.sum(_weighted(_eval(f, s1 * t1) * inner, W1)))
    if not math.isfinite(val):
        raise OracleError(f"E[σ(u)σ(v)] is not finite at (q1, q2, c) = ({q1:g}, {q2:g}, {c:g})")
    return val


# ---------------------------------------------------------------------------------------------
# σ and σ' of an activation
# ---------------------------------------------------------------------------------------------
def derivative_function(expr: sp.Expr) -> Callable[[np.ndarray], np.ndarray]:
    """σ' as a NumPy function: SymPy's derivative with Dirac deltas dropped."""
    from .activation import numpy_function
    from .symbols import x

    d = sp.diff(expr, x)
    if d.has(sp.DiracDelta):
        d = d.replace(sp.DiracDelta, lambda *args: sp.S.Zero)
    return numpy_function(d)


def oracle_nngp(act, q1: float, q2: float, c: float) -> float:
    """E[σ(u)σ(v)] by quadrature (``act`` an :class:`~dualcalc.activation.Activation`)."""
    return expectation_2d(act.function, act.function, q1, q2, c, act.kinks)


def oracle_ntk(act, q1: float, q2: float, c: float) -> float:
    """E[σ'(u)σ'(v)] by quadrature, σ' = 0 at jumps."""
    d = derivative_function(act.expr)
    return expectation_2d(d, d, q1, q2, c, act.kinks)


# ---------------------------------------------------------------------------------------------
# verification of a dual
# ---------------------------------------------------------------------------------------------
@dataclass
class Verification:
    """Result of :func:`verify_activation`.

    ``nngp_error``/``ntk_error``: the largest normalised error over the points,
    |k − k_oracle| / √(E[σ(u)²] E[σ(v)²]) (and the same with σ' for k̇) — the
    measure in which dualcalc states Hermite accuracy.  ``tolerance`` is
    max(VERIFY_TOL, 10 × the dual's own error estimate).
    """

    nngp_error: float
    ntk_error: float
    tolerance: float
    passed: bool
    points: list[tuple[float, float, float]] = field(default_factory=list)
    nngp_values: list[float] = field(default_factory=list)
    nngp_oracle: list[float] = field(default_factory=list)
    ntk_values: list[float] = field(default_factory=list)
    ntk_oracle: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _normalised_error(value: float, ref: float, scale: float) -> float:
    if not math.isfinite(value):
        return math.inf
    err = abs(value - ref)
    return err / scale if scale > 0 else err


def verify_activation(act, points: Sequence[tuple[float, float, float]] = VERIFY_POINTS,
                      tol: float | None = None) -> Verification:
    """Compare ``act.nngp`` and ``act.ntk`` with the quadrature oracle at ``points``."""
    dual = act.dual
    if tol is None:
        tol = max(VERIFY_TOL, 10.0 * float(dual.error_estimate or 0.0))
    f = act.function
    kinks = act.kinks
    d = derivative_function(act.expr)
    P = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    q_max = getattr(dual, "q_max", None)  # σ growing like exp(γx²): E[σ²] exists only for q < q_max
    if q_max is not None and np.max(P[:, :2]) >= 0.8 * q_max:
        P = P * (0.8 * q_max / np.max(P[:, :2]))  # same correlations, variances inside the domain
    points = [tuple(p) for p in P]
    qs = sorted({p[0] for p in points} | {p[1] for p in points})
    m_f = {q: expectation_2d(f, f, q, q, q, kinks) for q in qs}
    m_d = {q: expectation_2d(d, d, q, q, q, kinks) for q in qs}
    with warnings.catch_warnings():  # one vectorised call each: Hermite tables are built once
        warnings.simplefilter("ignore", RuntimeWarning)
        k_all = np.asarray(act.nngp(P[:, 0], P[:, 1], P[:, 2]), dtype=np.float64)
        t_all = np.asarray(act.ntk(P[:, 0], P[:, 1], P[:, 2]), dtype=np.float64)
    res = Verification(0.0, 0.0, tol, True, points=[tuple(map(float, p)) for p in P])
    for i, (q1, q2, c) in enumerate(P):
        k_ref = expectation_2d(f, f, q1, q2, c, kinks)
        t_ref = expectation_2d(d, d, q1, q2, c, kinks)
        k, t = float(k_all[i]), float(t_all[i])
        res.nngp_values.append(k)
        res.nngp_oracle.append(k_ref)
        res.ntk_values.append(t)
        res.ntk_oracle.append(t_ref)
        res.nngp_error = max(res.nngp_error, _normalised_error(k, k_ref, math.sqrt(m_f[q1] * m_f[q2])))
        res.ntk_error = max(res.ntk_error, _normalised_error(t, t_ref, math.sqrt(m_d[q1] * m_d[q2])))
    res.passed = bool(res.nngp_error <= tol and res.ntk_error <= tol)
    return res
