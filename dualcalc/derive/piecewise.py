r"""Piecewise polynomials with one breakpoint at 0 (docs/math.md §1, closure rules).

σ(x) = p₊(x) for x > 0 and p₋(x) for x < 0, p± polynomials: ReLU, leaky ReLU, abs,
step, sign, rectified monomials, max(x, 0)**2 + x, ...  (the value at 0 does not
matter).  Writing 1[x<0]·x^m = (−1)^m·(−x)₊^m, σ is a combination of rectified
monomials (εx)₊^m, ε = ±1, and everything reduces to the cross moments

    E[(ε₁u)₊^m (ε₂v)₊^n] = q1^{m/2} q2^{n/2} G_{m,n}(ε₁ε₂ρ),   G_{m,n}(r) = E[g₊^m h₊^n]

for unit-variance (g, h) with correlation r.  Gaussian integration by parts,
E[g·f(g, h)] = E[∂_g f] + r·E[∂_h f], applied to f = g₊^{m−1} h₊^n gives (m ≥ 1)

    G_{m,n} = (m−1)·G_{m−2,n} + r·n·G_{m−1,n−1},    with, where a factor is a step,
    ∂_g 1[g>0] = δ(g):   E[δ(g) h₊^k] = D_k = φ(0)·(1−r²)^{k/2}·E[N(0,1)₊^k]

(h | g=0 ~ N(0, 1−r²)), so  G_{1,n} = D_n + r·n·G_{0,n−1},  G_{m,0} = (m−1)G_{m−2,0} + r·D_{m−1},
G_{n,m} = G_{m,n}, and G_{0,0} = P(g>0, h>0) = (π − arccos r)/(2π).  Every G_{m,n}
is a polynomial in r, √(1−r²) and arccos r — the arc-cosine kernels J_n of Cho &
Saul for m = n, and the unequal-degree and positive/negative-part cross terms
that a general piecewise polynomial needs.  Results are written in ρ (clipped when
evaluated) and √q1, √q2.

k̇ = E[σ'(u)σ'(v)] with σ' = p₊'·1[x>0] + p₋'·1[x<0] — the same rule.  When σ jumps at
0 (p₊(0) ≠ p₋(0): step, sign, ...) σ' also holds a delta; k̇ then follows the
neural-tangents convention (delta dropped, ``ntk_convention = "zero-a.e."``).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import sympy as sp

from ..symbols import q1, q2, rho, x
from . import limits
from .common import poly_coeffs
from .result import Derived

_r, _s, _A = sp.symbols("_r _s _A", real=True)  # r, √(1−r²), arccos r
_R1, _R2 = sp.symbols("_R1 _R2", positive=True)  # √q1, √q2
_xp = sp.Symbol("_xp", positive=True)
_xn = sp.Symbol("_xn", negative=True)
_KINKY = (sp.Heaviside, sp.sign, sp.Abs, sp.Max, sp.Min, sp.Piecewise)


def _half_moment(k: int) -> sp.Expr:
    """E[g₊^k], g ~ N(0, 1)."""
    return 2 ** sp.Rational(k, 2) / 2 * sp.gamma(sp.Rational(k + 1, 2)) / sp.sqrt(sp.pi)


def _delta_term(k: int) -> sp.Expr:
    """E[δ(g) h₊^k] for unit-variance (g, h) with correlation r."""
    return _s**k * _half_moment(k) / sp.sqrt(2 * sp.pi)


@lru_cache(maxsize=None)
def G(m: int, n: int) -> sp.Expr:
    """E[g₊^m h₊^n] as a polynomial in (_r, _s, _A)."""
    if m == 0 and n == 0:
        return (sp.pi - _A) / (2 * sp.pi)
    if m == 0:
        return G(n, m)
    t1 = (m - 1) * G(m - 2, n) if m >= 2 else _delta_term(n)
    t2 = n * G(m - 1, n - 1) if n >= 1 else _delta_term(m - 1)
    return sp.expand(t1 + _r * t2)


def split(expr: sp.Expr) -> tuple[list[sp.Expr], list[sp.Expr]] | None:
    """(p₊, p₋) coefficient lists when σ is a polynomial on each side of 0, else None."""
    if not expr.has(*_KINKY):
        return None
    sides = []
    for sym in (_xp, _xn):
        try:
            branch = expr.subs(x, sym)
        except (TypeError, ValueError):
            return None
        if branch.has(*_KINKY):
            return None
        coeffs = poly_coeffs(sp.expand(branch.subs(sym, x)))
        if coeffs is None:
            return None
        sides.append(coeffs)
    # Guard: the split must reproduce σ numerically.
    f = sp.lambdify([x], expr, modules="mpmath")
    for t in (0.37, 1.9, 5.3, -0.41, -2.3, -4.7):
        p = sides[0] if t > 0 else sides[1]
        ref = sum(float(m) * t**j for j, m in enumerate(p))
        val = float(f(t))
        if not np.isclose(val, ref, rtol=1e-12, atol=1e-12 * (1 + abs(ref))):
            return None
    return sides[0], sides[1]


def _monomials(pp: list[sp.Expr], pm: list[sp.Expr]) -> list[tuple[sp.Expr, int, int]]:
    """σ as Σ coef·(εx)₊^m: list of (coef, m, ε)."""
    out = [(m_, j, 1) for j, m_ in enumerate(pp) if m_ != 0]
    out += [(m_ * (-1) ** j, j, -1) for j, m_ in enumerate(pm) if m_ != 0]
    return out


def _cross(a: list, b: list) -> sp.Expr:
    """Σ_{i,j} coef_i coef_j √q1^{m_i} √q2^{n_j} G_{m_i,n_j}(ε_iε_j ρ) in (_r, _s, _A, _R1, _R2)."""
    total = sp.S.Zero
    for ca, m, ea in a:
        for cb, n, eb in b:
            limits.check()
            g = G(m, n)
            if ea * eb < 0:
                g = g.subs({_r: -_r, _A: sp.pi - _A}, simultaneous=True)
            total += ca * cb * _R1**m * _R2**n * g
    return total


def _finish(expr: sp.Expr) -> sp.Expr:
    """Reduce _s² = 1 − _r², group by powers of (arccos ρ, √(1−ρ²)), and write the result in
    ρ, √(1−ρ²), arccos ρ, √q1, √q2."""
    groups: dict[tuple[int, int], list] = {}
    for t in sp.Add.make_args(sp.expand(expr)):
        limits.check()
        pa = pb = 0
        rest = []
        for f in sp.Mul.make_args(t):
            base, ex = f.as_base_exp()
            if base == _A:
                pa += int(ex)
            elif base == _s:
                pb += int(ex)
            else:
                rest.append(f)
        coef = sp.Mul(*rest) * (1 - _r**2) ** (pb // 2)
        groups.setdefault((pa, pb % 2), []).append(coef)
    coef = {key: sp.expand(sp.Add(*cs)) for key, cs in groups.items()}
    assert all(pa <= 1 for pa, _ in coef)  # arccos enters linearly (through G_00 only)
    # k = P0 + A·P1.  Near ρ = −1 (A → π) the form (P0 + π P1) − (π − A)·P1 avoids cancelling
    # two O(1) numbers; use it when k is smaller at ρ = −1 than at ρ = +1 (e.g. rectified σ).
    at = {_R1: 1, _R2: 1, _s: 0}
    full = sp.Add(*[v * _A**pa * _s**pb for (pa, pb), v in coef.items()])
    k_minus = abs(complex(full.subs({**at, _r: -1, _A: sp.pi})))
    k_plus = abs(complex(full.subs({**at, _r: 1, _A: 0})))
    use_b = k_minus < k_plus
    if use_b:
        for pb in (0, 1):
            p1 = coef.pop((1, pb), sp.S.Zero)
            if p1 != 0:
                coef[(0, pb)] = sp.expand(coef.get((0, pb), sp.S.Zero) + sp.pi * p1)
                coef[(1, pb)] = -p1
    out = []
    for (pa, pb), v in sorted(coef.items()):
        total = sp.factor_terms(v)
        if total != 0:
            out.append(total * _A**pa * _s**pb)
    # A common factor (e.g. (q1 q2)^{n/2} of a homogeneous σ) goes outside the sum, so that
    # the cancellation near ρ = ±1 happens in the same numbers at every scale.
    k = sp.factor_terms(sp.Add(*out))
    angle = sp.acos(-rho) if use_b else sp.acos(rho)  # π − arccos ρ, resp. arccos ρ
    # √((1−ρ)(1+ρ)): 1 ± ρ are exact in floating point near |ρ| = 1, 1 − ρ² is not
    sub = {_r: rho, _s: sp.sqrt((1 - rho) * (1 + rho)), _A: angle, _R1: sp.sqrt(q1), _R2: sp.sqrt(q2)}
    return k.xreplace(sub)


def piecewise_dual(expr: sp.Expr) -> Derived | None:
    """Closed-form dual of a piecewise polynomial with its breakpoint at 0, else None."""
    sides = split(expr)
    if sides is None:
        return None
    pp, pm = sides
    if pp == pm:
        return None  # a plain polynomial in disguise: the polynomial rule handles it
    terms = _monomials(pp, pm)
    k = _finish(_cross(terms, terms))
    dpp = [j * m_ for j, m_ in enumerate(pp)][1:] or [sp.S.Zero]
    dpm = [j * m_ for j, m_ in enumerate(pm)][1:] or [sp.S.Zero]
    dterms = _monomials(dpp, dpm)
    kdot = _finish(_cross(dterms, dterms)) if dterms else sp.S.Zero
    jump = pp[0] - pm[0]
    conv = "zero-a.e." if jump != 0 else "price"
    return Derived(nngp=k, ntk=kdot, rule="piecewise-polynomial", ntk_convention=conv)
