r"""The derivation engine: the dual of any formula, exactly where possible.

:func:`derive` tries, in order,

1. **recognition** — σ = a·f(b·x; θ) + d for a closed-form catalog entry f
   (:mod:`.recognize`);
2. **polynomials** (:mod:`.polynomial`);
3. **piecewise polynomials** with the breakpoint at 0 (:mod:`.piecewise`), then
   **piecewise polynomial × exp(a·x)** with breakpoints anywhere (:mod:`.piecewise_exp`:
   ELU, SELU, hard tanh, ReLU6, splines …; duals in Φ₂, Φ, φ);
4. the **Gaussian class** p(x)·exp(βx + γx²), complex β, γ (:mod:`.gaussian`);
5. **erf/Φ-type** terms with polynomials and Gaussian factors (:mod:`.erf`);

and returns a :class:`Derived` (``rule`` names the rule) or ``None``, in which
case the caller uses the Hermite expansion.  Before any of that
:func:`~.checks.check_formula` refuses divergent or undefined formulas with a
specific error.  The symbolic attempt runs under a time limit (``timeout``
seconds, default :data:`DEFAULT_TIMEOUT`; on expiry: ``None`` and a warning).

Every closed form is validated numerically before it is returned: at two
variances it must reproduce E[σ(u)²] and E[σ'(u)²] (1-D quadrature), and at
ρ = ±1/2 the Mehler sums Σ r_l(q1) r_l(q2) ρ^l of σ and of σ' (quadrature
coefficients to degree 160, truncation < 1e-40) to 1e-9 relative.  A form that
fails is discarded with a warning (the Hermite method takes over), so a rule
bug cannot silently give wrong numbers.  A dual whose k(1, 1, 1) overflows
float64 is refused (:class:`DivergentError`).

Results (and "no closed form") are cached on disk (:mod:`.cache`).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.special
import sympy as sp

from .. import hermite as H
from ..symbols import c, q1, q2, rho, x
from ..warn import warn
from . import cache, limits
from .checks import check_formula, check_overflow
from .erf import erf_dual
from .gaussian import existence_of, gaussian_dual
from .piecewise import piecewise_dual
from .piecewise_exp import breakpoints, piecewise_exp_dual
from .polynomial import polynomial_dual
from .recognize import catalog_fingerprint, recognize
from .result import Derived

#: Seconds allowed for the symbolic attempt before falling back to Hermite.
DEFAULT_TIMEOUT = 5.0

RULES = (
    ("recognition", recognize),
    ("polynomial", polynomial_dual),
    ("piecewise-polynomial", piecewise_dual),
    ("piecewise-exponential", piecewise_exp_dual),
    ("gaussian-class", gaussian_dual),
    ("erf-class", erf_dual),
)

_NUMPY_MODULES = [{"erf": scipy.special.erf, "erfc": scipy.special.erfc}, "numpy"]


def derive(expr: sp.Expr, *, timeout: float | None = DEFAULT_TIMEOUT, use_cache: bool = True,
           validate: bool = True) -> Derived | None:
    """Closed-form dual of σ = ``expr`` (a SymPy expression in x), or None.

    Raises :class:`~dualcalc.errors.DivergentError` or
    :class:`~dualcalc.errors.FormulaError` for formulas whose Gaussian expectation
    diverges or that are undefined for some real x.
    """
    if not isinstance(expr, sp.Expr):
        raise TypeError(f"derive() needs a SymPy expression, got {type(expr).__name__}")
    key = canon = None
    if use_cache:
        key, canon = cache.cache_key(expr, catalog_fingerprint())
        hit = cache.load(key, canon)
        if hit is not None:
            if hit.result is not None:
                return hit.result
            if hit.reason != "timeout" or (timeout is not None and hit.timeout is not None
                                           and hit.timeout >= timeout):
                return None
    check_formula(expr)
    domain, q_max = existence_of(expr)  # exp(γx²), γ > 0: refuse or note where the dual exists
    result, reason = None, "no-rule"
    try:
        with limits.deadline(timeout):
            for _name, rule in RULES:
                result = rule(expr)
                if result is not None:
                    break
    except limits.DerivationTimeout:
        result, reason = None, "timeout"
        warn(f"symbolic derivation of σ = {sp.sstr(expr)} did not finish within {timeout:g} s; "
             "using the Hermite expansion (raise the limit with Activation.with_options(timeout=...))",
             RuntimeWarning)
    if result is not None and domain and not result.domain:
        result = dataclasses.replace(result, domain=domain, q_max=q_max)
    if result is not None:
        check_overflow(_diag_value(result), sp.sstr(expr))
        if validate:
            problem = validation_error(expr, result)
            if problem:
                warn(f"the closed form found by rule {result.rule!r} for σ = {sp.sstr(expr)} failed its "
                     f"numerical self-check ({problem}); using the Hermite expansion instead",
                     RuntimeWarning)
                result, reason = None, "failed-validation"
    if use_cache:
        cache.store(key, canon, cache.Entry(result, reason, timeout))
    return result


def _lambdify(e: sp.Expr):
    return sp.lambdify((q1, q2, c, rho), e, modules=_NUMPY_MODULES, cse=True)


def _evaluate(e: sp.Expr, a, b, cc) -> np.ndarray:
    """e at arrays of (q1, q2, c), ρ clipped; inf where the evaluation fails."""
    a, b, cc = (np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (a, b, cc))
    s = np.sqrt(a * b)
    r = np.clip(np.where(s > 0, cc / np.where(s > 0, s, 1.0), 0.0), -1.0, 1.0)
    with np.errstate(all="ignore"):
        try:
            out = np.real(np.asarray(_lambdify(e)(a, b, cc, r), dtype=np.complex128))
        except (OverflowError, ZeroDivisionError, TypeError, ValueError):
            return np.full(a.shape, np.inf)
    return np.broadcast_to(out, a.shape)


def _diag_value(d: Derived) -> float:
    return float(_evaluate(d.nngp, 1.0, 1.0, 1.0)[0])


def derivative_ae(expr: sp.Expr) -> sp.Expr:
    """σ' almost everywhere: the derivative with every DiracDelta dropped."""
    d = sp.diff(expr, x)
    return d.replace(lambda n: isinstance(n, sp.DiracDelta), lambda n: sp.S.Zero) if d.has(sp.DiracDelta) else d


def numeric(expr: sp.Expr):
    f = sp.lambdify([x], expr, modules=_NUMPY_MODULES)

    def g(t):
        t = np.asarray(t, dtype=np.float64)
        with np.errstate(all="ignore"):
            return np.broadcast_to(np.asarray(f(t), dtype=np.float64), t.shape)
    return g


def validation_error(expr: sp.Expr, d: Derived, tol: float = 1e-9) -> str:
    """'' when the closed form matches quadrature/Mehler sums, else what went wrong."""
    qa, qb = 0.6, 1.7
    if d.q_max is not None:
        qa, qb = 0.3 * d.q_max, 0.45 * d.q_max
    deg = 160
    qs = np.array([qa, qb])
    f = numeric(expr)
    df = numeric(derivative_ae(expr))
    kinks = breakpoints(expr) or (0.0,)  # the quadrature panels must end at every breakpoint
    R, M = H.coefficient_table(f, deg, qs, kinks)
    Rd, Md = H.coefficient_table(df, deg, qs, kinks)
    pts, refs, scales, kinds = [], [], [], []
    scale_k = math.sqrt(max(M[0], 1e-300) * max(M[1], 1e-300))
    scale_t = math.sqrt(max(Md[0], 1e-300) * max(Md[1], 1e-300))
    for i, q in enumerate(qs):
        pts += [(q, q, q), (q, q, q)]
        refs += [M[i], Md[i]]
        scales += [max(M[i], 1e-300), max(Md[i], 1e-300)]
        kinds += ["nngp", "ntk"]
    for r in (-0.5, 0.5):
        cc = r * math.sqrt(qa * qb)
        pw = r ** np.arange(deg + 1)
        pts += [(qa, qb, cc), (qa, qb, cc)]
        refs += [float(np.sum(R[0] * R[1] * pw)), float(np.sum(Rd[0] * Rd[1] * pw))]
        scales += [scale_k, scale_t]
        kinds += ["nngp", "ntk"]
    P = np.array(pts)
    vals = {"nngp": _evaluate(d.nngp, P[:, 0], P[:, 1], P[:, 2]), "ntk": _evaluate(d.ntk, P[:, 0], P[:, 1], P[:, 2])}
    for i, which in enumerate(kinds):
        val, ref, scale = float(vals[which][i]), refs[i], scales[i]
        a, b, cc = pts[i]
        if not math.isfinite(val) or abs(val - ref) > tol * scale + 1e-300:
            return f"{which}({a:.3g}, {b:.3g}, {cc:.3g}) = {val!r}, quadrature says {ref!r}"
    return ""
