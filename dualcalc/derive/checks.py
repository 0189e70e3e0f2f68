"""Refuse pathological activations early, each with its own specific error.

Checked before any symbolic or numerical work (all numeric probes are bounded
and cheap):

* exp of a polynomial of degree > 2 that grows (exp(x**3), exp(x**4)): diverges;
* super-Gaussian growth, e.g. nested exponentials exp(exp(x)): diverges for every variance;
* poles (1/x, 1/(x−1)**2, tan(x)) where σ² is not integrable: diverges there;
* log, sqrt, fractional powers, asin/acos of arguments that leave their real
  domain (log(x), sqrt(x), x**0.5, asin(2*x)): undefined (complex) there.

A finite but unrepresentable dual (exp(100*x): k(1,1,1) = e^{20000}) is refused by
:func:`check_overflow` once the dual is known.
"""
from __future__ import annotations

import math

import mpmath
import numpy as np
import sympy as sp

from ..errors import DivergentError, FormulaError
from ..symbols import x
from .gaussian import exponent_growth_error

_GRID = np.concatenate([np.linspace(-40.0, 40.0, 16001), [0.0]])
_MODULES = [{"erf": __import__("scipy.special", fromlist=["erf"]).erf,
             "erfc": __import__("scipy.special", fromlist=["erfc"]).erfc}, "numpy"]


def _values(expr: sp.Expr, t: np.ndarray) -> np.ndarray:
    f = sp.lambdify([x], expr, modules=_MODULES)
    with np.errstate(all="ignore"):
        try:
            v = np.asarray(f(t), dtype=np.complex128)
        except (TypeError, ValueError, ZeroDivisionError, OverflowError):
            v = np.array([complex(_mp_eval(expr, float(s))) for s in t])
    return np.broadcast_to(v, t.shape)


def _mp_eval(expr: sp.Expr, t: float):
    try:
        return sp.lambdify([x], expr, modules="mpmath")(mpmath.mpf(t))
    except (ZeroDivisionError, ValueError, OverflowError, TypeError):
        return mpmath.nan


def _first(t: np.ndarray, mask: np.ndarray) -> float:
    idx = np.flatnonzero(mask)
    # report the bad point closest to 0
    return float(t[idx[np.argmin(np.abs(t[idx]))]])


def _text(e: sp.Expr) -> str:
    return sp.sstr(e)


def check_formula(expr: sp.Expr) -> None:
    """Raise :class:`DivergentError` / :class:`FormulaError` for a pathological σ."""
    if not isinstance(expr, sp.Expr):
        raise FormulaError(f"not an expression: {expr!r}")
    if expr.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        raise FormulaError(f"σ = {_text(expr)} is infinite or undefined")
    for node in sp.preorder_traversal(expr):
        if not getattr(node, "has", None) or not node.has(x):
            continue
        if isinstance(node, sp.exp):
            err = exponent_growth_error(node.args[0])
            if err is not None:
                raise err
        elif isinstance(node, sp.log):
            _domain(node.args[0], f"log({_text(node.args[0])})", allow_zero=True)
        elif isinstance(node, (sp.asin, sp.acos)):
            v = _values(node.args[0], _GRID)
            bad = (np.abs(v.real) > 1 + 1e-12) | (np.abs(v.imag) > 0)
            if bad.any():
                raise FormulaError(
                    f"{_text(node)} is undefined (complex) where |{_text(node.args[0])}| > 1, e.g. at "
                    f"x = {_first(_GRID, bad):g}; an activation must be real for every real x")
        elif isinstance(node, (sp.tan, sp.cot, sp.sec, sp.csc)):
            raise DivergentError(
                f"{_text(node)} has poles (at every zero of its cosine/sine): the Gaussian expectation "
                "E[σ(u)²] diverges there")
        elif node.is_Pow:
            base, ex = node.args
            if not base.has(x):
                continue
            if ex.is_number and not ex.is_integer:
                _domain(base, _text(node), allow_zero=True)
            if ex.is_number and ex.is_negative:
                _pole(base, node, expr)
    _growth(expr)


def _domain(arg: sp.Expr, what: str, allow_zero: bool) -> None:
    """Refuse when ``arg`` is negative (or complex) for some real x."""
    if arg.is_positive or (allow_zero and arg.is_nonnegative):
        return
    v = _values(arg, _GRID)
    scale = 1e-12 * max(1.0, float(np.nanmax(np.abs(v[np.isfinite(v)]))) if np.isfinite(v).any() else 1.0)
    bad = (v.real < -scale) | (np.abs(v.imag) > scale)
    if bad.any():
        raise FormulaError(
            f"{what} is undefined (complex) for {_text(arg)} < 0, e.g. at x = {_first(_GRID, bad):g}; an "
            f"activation must be real for every real x (use e.g. abs(...) or max(..., 0) inside)")
    if not allow_zero and (np.abs(v) <= scale).any():
        raise DivergentError(f"{what} is singular at x = {_first(_GRID, np.abs(v) <= scale):g}")


def _pole(base: sp.Expr, node: sp.Expr, expr: sp.Expr) -> None:
    """A negative power of something that vanishes: refuse non-square-integrable poles."""
    zeros: list[float] = []
    try:
        poly = sp.Poly(base, x)
        if all(m.is_number for m in poly.all_coeffs()) and poly.degree() <= 60:
            zeros = [float(r) for r in sp.Poly(poly, x).nroots(n=15) if abs(sp.im(r)) < 1e-12]
    except (sp.PolynomialError, sp.polys.polyerrors.PolynomialError, TypeError, ValueError):
        zeros = []
    if not zeros:
        v = np.abs(_values(base, _GRID))
        s = np.sign(_values(base, _GRID).real)
        idx = np.flatnonzero((s[:-1] * s[1:] < 0) | (v[:-1] == 0))
        zeros = [float(_GRID[i]) for i in idx[:8]]
    for r in zeros:
        p = _pole_order(expr, r)
        if p >= 0.5:
            raise DivergentError(
                f"σ has a pole at x = {r:g} (through {_text(node)}; |σ| grows like |x − {r:g}|^−{p:.3g}): the "
                f"Gaussian expectation of σ² diverges there")


def _pole_order(expr: sp.Expr, r: float) -> float:
    """p such that |expr(r + h)| ~ h^(−p) as h → 0 (numerically, both sides)."""
    out = 0.0
    with mpmath.workdps(30):
        f = sp.lambdify([x], expr, modules="mpmath")
        for sgn in (1, -1):
            try:
                a = abs(complex(f(mpmath.mpf(r) + sgn * mpmath.mpf("1e-6"))))
                b = abs(complex(f(mpmath.mpf(r) + sgn * mpmath.mpf("1e-8"))))
            except (ZeroDivisionError, ValueError, OverflowError):
                return math.inf
            if a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b):
                out = max(out, math.log(b / a) / math.log(100.0))
    return out


def _growth(expr: sp.Expr) -> None:
    """Refuse super-Gaussian growth (nested exponentials): log|σ(x)| ≫ x² at large |x|."""
    if not expr.has(sp.exp, sp.sinh, sp.cosh, sp.Pow):
        return
    f = sp.lambdify([x], expr, modules="mpmath")
    with mpmath.workdps(20):
        for sgn in (1, -1):
            prev = None
            for t in (1.0, 2.0, 4.0, 8.0, 16.0):
                try:
                    v = f(mpmath.mpf(sgn * t))
                    L = float(mpmath.log(abs(v))) if v != 0 else -math.inf
                except (ZeroDivisionError, ValueError, OverflowError, TypeError):
                    break
                if not math.isfinite(L) and L > 0:
                    L = math.inf
                ratio = L / (t * t)
                if L > 1e6:
                    raise DivergentError(
                        f"σ = {_text(expr)} is astronomically large (log|σ({sgn * t:g})| ≈ {L:.3g}, e.g. a nested "
                        "exponential or a huge exponent): its Gaussian expectation diverges or overflows")
                if t >= 4 and prev is not None and ratio > 2.0 and ratio > 4 * max(prev, 0.25):
                    raise DivergentError(
                        f"σ = {_text(expr)} grows faster than any Gaussian (log|σ({sgn * t:g})| ≈ {L:.3g}, e.g. a "
                        "nested exponential): the Gaussian expectation E[σ(u)²] diverges for every variance")
                prev = ratio


def check_overflow(k_diag: float, label: str) -> None:
    """Refuse a dual whose unit-variance diagonal k(1, 1, 1) is not representable in float64."""
    if not math.isfinite(k_diag) or abs(k_diag) > 1e300:
        raise DivergentError(
            f"the dual of σ = {label} overflows float64 at unit variance (k(1, 1, 1) = E[σ(u)²] "
            f"{'= ' + format(k_diag, '.3g') if math.isfinite(k_diag) else 'is beyond 1e308'}); "
            "the exponents are too large — rescale the activation")
