r"""Recognise a formula as a catalog activation up to an affine change.

σ(x) = a·f(b·x; θ) + d, with f a catalog entry that has a closed-form dual and θ its
parameters (a shift inside f is recognised when the entry has a parameter for it,
e.g. A*sin(B*x + C)).  Spelling does not matter: the test is numerical — a least
squares fit of (a, b, d, θ) on sample points, then the fitted numbers are made
exact (``nsimplify``) and the identity is verified at 30 digits at fresh points.
Only then is the entry's closed form used:

    k(q1, q2, c) = a²·k_f(b²q1, b²q2, b²c) + a·d·(m(b²q1) + m(b²q2)) + d²,
    k̇(q1, q2, c) = a²b²·k̇_f(b²q1, b²q2, b²c),

where the mean m(q) = E[f(√q g)] comes from the dual itself: k_f(q, q0, 0) = m(q)·m(q0)
(independent pair), so m(q) = k_f(q, q0, 0)/m(q0) for a q0 with m(q0) ≠ 0.
ρ = c/√(q1 q2) is unchanged by the scaling.
"""
from __future__ import annotations

import hashlib
from fractions import Fraction
import warnings
from dataclasses import dataclass
from functools import lru_cache

import mpmath
import numpy as np
import scipy.optimize
import scipy.special
import sympy as sp

from ..symbols import c, q1, q2, rho, x
from . import limits
from .result import Derived

_MODULES = [{"erf": scipy.special.erf, "erfc": scipy.special.erfc}, "numpy"]
_XS = np.concatenate([np.linspace(-4.0, 4.0, 33) + 0.0173, [-7.3, -5.9, 5.5, 6.7]])
_KINKY = (sp.Heaviside, sp.sign, sp.Abs, sp.Max, sp.Min, sp.Piecewise)
_FAMILY = {sp.erf: "erf", sp.erfc: "erf", sp.exp: "exp", sp.sinh: "exp", sp.cosh: "exp",
           sp.tanh: "exp", sp.sin: "trig", sp.cos: "trig", sp.log: "log"}


@dataclass(frozen=True)
class _Candidate:
    name: str
    expr: sp.Expr            # in x and the parameter symbols
    params: tuple[sp.Symbol, ...]
    defaults: tuple[float, ...]
    nngp: str
    ntk: str | None
    convention: str
    signature: tuple


def signature(expr: sp.Expr) -> tuple:
    """Coarse shape class: kinked or not, and the families of smooth functions used."""
    kinked = expr.has(*_KINKY)
    fams = set()
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.Function) and node.has(x) and not isinstance(node, _KINKY):
            fams.add(_FAMILY.get(type(node), type(node).__name__))
        if node.is_Pow and node.has(x) and not node.exp.is_Integer:
            fams.add("pow")
        if node.is_Pow and node.has(x) and node.exp.is_Integer and node.exp < 0:
            fams.add("ratio")
    return (kinked, frozenset(fams))


def _entries_fingerprint() -> tuple:
    from ..catalog import REGISTRY
    rows = []
    for e in REGISTRY.all().values():
        if e.nngp is None or e.builder is not None:
            continue
        if any(isinstance(v, list) for v in e.parameters.values()):
            continue
        rows.append((e.name, e.formula, e.nngp, e.ntk, e.ntk_convention, tuple(sorted(e.parameters.items()))))
    return tuple(sorted(rows))


def catalog_fingerprint() -> str:
    """A hash of the closed-form catalog entries recognition can use (part of cache keys)."""
    return hashlib.sha256(repr(_entries_fingerprint()).encode()).hexdigest()[:16]


@lru_cache(maxsize=8)
def _candidates(fingerprint: tuple) -> tuple[_Candidate, ...]:
    from ..formula import parse_formula
    out = []
    for name, formula, nngp, ntk, conv, params in fingerprint:
        names = [k for k, _ in params]
        try:
            expr = parse_formula(formula, symbolic_params=names)
        except Exception:  # a broken catalog entry is the catalog tests' business
            continue
        syms = tuple(sp.Symbol(k, real=True) for k in names)
        out.append(_Candidate(name, expr, syms, tuple(float(v) for _, v in params), nngp, ntk, conv,
                              signature(expr.subs(dict(zip(syms, [v for _, v in params]))))))
    return tuple(sorted(out, key=lambda cd: (len(cd.params), cd.name)))


def _numeric(expr: sp.Expr, syms: tuple) :
    f = sp.lambdify((x, *syms), expr, modules=_MODULES)

    def g(t, *p):
        with np.errstate(all="ignore"):
            return np.broadcast_to(np.asarray(f(t, *p), dtype=np.float64), np.shape(t))
    return g


def _fits(cand: _Candidate, y: np.ndarray):
    """Candidate (a, b, d, θ) fits of y ≈ a·f(b·x; θ) + d on the sample points, simplest first."""
    f = _numeric(cand.expr, cand.params)
    scale = 1.0 + float(np.max(np.abs(y)))
    # stages: which of (a, b, d) are free; b fixed at ±1 first (homogeneous f are degenerate in a, b)
    stages = [((), 1.0), (("a", "d"), 1.0), (("a", "d"), -1.0), (("a", "b", "d"), 1.0)]
    for free, b0 in stages:
        limits.check()

        def unpack(z, free=free, b0=b0):
            vals = {"a": 1.0, "b": b0, "d": 0.0}
            for i, k in enumerate(free):
                vals[k] = z[i]
            return vals, z[len(free):]

        def resid(z, unpack=unpack):
            vals, th = unpack(z)
            return (vals["a"] * f(vals["b"] * _XS, *th) + vals["d"] - y) / scale

        z0 = [{"a": 1.0, "b": b0, "d": 0.0}[k] for k in free] + list(cand.defaults)
        if not z0:
            r = resid(np.array([]))
            if np.all(np.isfinite(r)) and np.max(np.abs(r)) < 1e-10:
                yield {"a": 1.0, "b": 1.0, "d": 0.0, "theta": []}
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sol = scipy.optimize.least_squares(resid, np.array(z0, dtype=float), method="lm",
                                                   xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=40)
        except (ValueError, FloatingPointError):
            continue
        if np.all(np.isfinite(sol.fun)) and np.max(np.abs(sol.fun)) < 1e-9:
            vals, th = unpack(sol.x)
            yield {**vals, "theta": list(th)}


def _exact(v: float) -> sp.Expr | None:
    """A simple exact number equal to v (rational, ±√rational or rational·π), else None."""
    v = float(v)
    if not np.isfinite(v):
        return None
    if abs(v) < 1e-13:
        return sp.S.Zero
    tol = 1e-11 * max(1.0, abs(v))
    fr = Fraction(v).limit_denominator(1_000_000)
    if abs(float(fr) - v) <= tol:
        return sp.Rational(fr.numerator, fr.denominator)
    sq = Fraction(v * v).limit_denominator(1_000_000)
    if abs(np.sqrt(float(sq)) - abs(v)) <= tol:
        return sp.sign(v) * sp.sqrt(sp.Rational(sq.numerator, sq.denominator))
    fp = Fraction(v / np.pi).limit_denominator(10_000)
    if abs(float(fp) * np.pi - v) <= tol:
        return sp.Rational(fp.numerator, fp.denominator) * sp.pi
    return None


def _verify(expr: sp.Expr, target: sp.Expr) -> bool:
    """σ ≡ target, checked at 30 digits at points not used in the fit."""
    f = sp.lambdify([x], expr, modules="mpmath")
    g = sp.lambdify([x], target, modules="mpmath")
    with mpmath.workdps(30):
        for t in ("-3.0713", "-1.1311", "-0.2917", "0.1543", "0.8861", "2.4419", "4.1207"):
            try:
                a, b = f(mpmath.mpf(t)), g(mpmath.mpf(t))
                if abs(a - b) > mpmath.mpf("1e-22") * (1 + abs(a)):
                    return False
            except (TypeError, ValueError, ZeroDivisionError):
                return False
    return True


def recognize(expr: sp.Expr) -> Derived | None:
    """The closed form of a catalog entry σ equals up to a·f(b·x; θ) + d, else None."""
    cands = _candidates(_entries_fingerprint())
    if not cands or not expr.free_symbols <= {x}:
        return None
    sig = signature(expr)
    with np.errstate(all="ignore"):
        y = _numeric(expr, ())(_XS)
    if not np.all(np.isfinite(y)):
        return None
    from ..formula import DUAL_VARIABLES, parse_formula
    for cand in cands:
        if cand.signature != sig:
            continue
        for fit in _fits(cand, y):
            limits.check()
            a, b, d = (_exact(fit[k]) for k in ("a", "b", "d"))
            theta = [_exact(v) for v in fit["theta"]]
            if a is None or b is None or d is None or any(t is None for t in theta) or a == 0 or b == 0:
                continue
            sub = dict(zip(cand.params, theta))
            target = a * cand.expr.subs(sub).subs(x, b * x) + d
            if not _verify(expr, target):
                continue
            values = {str(s): t for s, t in zip(cand.params, theta)}
            try:
                kf = parse_formula(cand.nngp, values, variables=DUAL_VARIABLES)
                tf = (parse_formula(cand.ntk, values, variables=DUAL_VARIABLES) if cand.ntk is not None
                      else None)
            except Exception:
                continue
            f_num = _numeric(cand.expr.subs(sub), ())
            return _transform(cand, kf, tf, a, b, d, values, f_num)
    return None


def _mean_function(kf: sp.Expr, f_num) -> sp.Expr | None:
    """m(q) as an expression in q1 (from k(q1, q0, 0) = m(q1)·m(q0)); None when m ≡ 0.

    ``f_num`` evaluates f numerically; it fixes the sign of m(q0), which k does not carry."""
    kq = kf.subs(rho, 0)
    g, w = np.polynomial.hermite_e.hermegauss(160)
    w = w / np.sqrt(2 * np.pi)
    best = None
    for q0 in (sp.S.One, sp.Rational(1, 2), sp.Integer(2)):
        val = complex(sp.N(kq.subs({q1: q0, q2: q0, c: 0}), 30))
        if abs(val.imag) < 1e-12 and val.real > 1e-14 and (best is None or val.real > best[1]):
            best = (q0, val.real)
    if best is None:
        return None
    q0 = best[0]
    with np.errstate(all="ignore"):
        mean = float(np.sum(w * f_num(np.sqrt(float(q0)) * g)))
    if not np.isfinite(mean) or abs(mean) < 1e-3 * np.sqrt(best[1]):
        return None
    m0 = sp.sqrt(kq.subs({q1: q0, q2: q0, c: 0})) * (1 if mean > 0 else -1)
    return kq.subs({q2: q0, c: 0}) / m0


def _transform(cand, kf, tf, a, b, d, values, f_num) -> Derived:
    b2 = b**2
    scaled = {q1: b2 * q1, q2: b2 * q2, c: b2 * c}
    k = a**2 * kf.subs(scaled, simultaneous=True)
    if tf is None:
        if cand.convention == "price":
            tf = sp.diff(kf.subs(rho, c / sp.sqrt(q1 * q2)), c)
        else:
            tf = sp.S.Zero
    t = a**2 * b2 * tf.subs(scaled, simultaneous=True)
    if d != 0:
        m = _mean_function(kf, f_num)
        if m is not None:
            mq1 = m.subs(q1, b2 * q1)
            mq2 = m.subs(q1, b2 * q2)
            k = k + a * d * (mq1 + mq2)
        k = k + d**2
    parts = [f"{k_}={v}" for k_, v in values.items()]
    if (a, b, d) != (1, 1, 0):
        parts.append(f"σ = {sp.sstr(a * sp.Function(cand.name)(b * x) + d)}")
    rule = f"catalog:{cand.name}"
    return Derived(nngp=k, ntk=t, rule=rule, ntk_convention=cand.convention,
                   detail="; ".join(parts))
