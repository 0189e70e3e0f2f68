r"""erf/Φ-type activations: σ(x) = Σ_t p_t(x)·erf(a_t x)·e^{−g_t x²} + P(x).

Covers erf(a·x) + b·x, x·Φ(a·x) (GeLU-like; Φ(t) = (1 + erf(t/√2))/2), x·erf(x),
erfc, probit-type combinations with polynomials and Gaussian factors e^{−g x²}
(g ≥ 0), with all cross terms.  (Williams 1997; neural-tangents' Erf and Gelu.)

Every expectation E_Σ[u^m v^n A(u) B(v)] (A, B ∈ {1, erf(a·)}) reduces, by Gaussian
integration by parts  E[u·F] = q1·E[∂_u F] + c·E[∂_v F]  (and the same in v), to:

* polynomial Gaussian moments (Isserlis) when no erf is left;
* E[erf(au) erf(bv)] = (2/π)·arcsin(2ab·c / √((1 + 2a²q1)(1 + 2b²q2)));
* 0 when the integrand is odd;
* terms in which erf'(au) = (2a/√π)e^{−a²u²} appeared: a Gaussian factor
  e^{−g1 u² − g2 v²} is absorbed by a change of measure,
  E_Σ[e^{−g1u²−g2v²} h] = det(I + 2ΣG)^{−1/2}·E_{Σ'}[h],  Σ' = (I + 2ΣG)^{−1}Σ.

Each integration by parts lowers the polynomial degree or removes an erf, so the
recursion ends.  k̇ = E[σ'(u)σ'(v)] with σ' = Σ (p_t' erf + p_t·erf'·…) in the same
class (Gaussian factors), computed by the same recursion.
"""
from __future__ import annotations

from collections import defaultdict

import sympy as sp

from ..symbols import c, q1, q2, x
from . import limits
from .common import isserlis
from .result import Derived

Term = tuple[sp.Expr | None, sp.Expr, tuple]  # (a or None, g, polynomial coefficients)


def decompose(expr: sp.Expr) -> list[Term] | None:
    """σ as Σ p_t(x)·erf(a_t x)·e^{−g_t x²}, or None (at least one erf term required)."""
    if not expr.has(sp.erf, sp.erfc):
        return None
    e = expr.replace(lambda n: isinstance(n, sp.erfc), lambda n: 1 - sp.erf(n.args[0]))
    e = sp.expand(e, power_exp=False)
    groups: dict[tuple, dict[int, sp.Expr]] = defaultdict(lambda: defaultdict(lambda: sp.S.Zero))
    for term in sp.Add.make_args(e):
        limits.check()
        coeff, rest = term.as_independent(x, as_Add=False)
        power, a, expo = 0, None, sp.S.Zero
        for f in sp.Mul.make_args(rest):
            if f.is_number:
                coeff = coeff * f
            elif f == x:
                power += 1
            elif f.is_Pow and f.base == x and f.exp.is_Integer and f.exp > 0:
                power += int(f.exp)
            elif isinstance(f, sp.erf):
                if a is not None:
                    return None  # products of erfs: no closed form in general
                arg = sp.expand(f.args[0])
                slope = arg.coeff(x)
                if sp.expand(arg - slope * x) != 0 or not slope.is_number or not slope.is_real or slope == 0:
                    return None
                if slope < 0:
                    coeff, slope = -coeff, -slope
                a = slope
            elif isinstance(f, sp.exp):
                expo += f.args[0]
            else:
                return None
        if expo != 0:
            try:
                p = sp.Poly(sp.expand(expo), x)
            except sp.PolynomialError:
                return None
            if p.degree() > 2 or p.coeff_monomial(x) != 0 or not all(m.is_real for m in p.all_coeffs()):
                return None
            coeff = coeff * sp.exp(p.coeff_monomial(1))
            g = -p.coeff_monomial(x**2)
            if g < 0:
                return None
        else:
            g = sp.S.Zero
        groups[(a, g)][power] += coeff
    terms = []
    for (a, g), poly in groups.items():
        deg = max(poly)
        coeffs = tuple(poly.get(j, sp.S.Zero) for j in range(deg + 1))
        if any(m != 0 for m in coeffs):
            terms.append((a, g, coeffs))
    if not any(a is not None for a, _, _ in terms):
        return None
    return terms


def _weight(g1, g2, S):
    """Absorb e^{−g1 u² − g2 v²}: (det(I + 2ΣG)^{−1/2}, Σ')."""
    Q1, Q2, C = S
    D = sp.cancel((1 + 2 * g1 * Q1) * (1 + 2 * g2 * Q2) - 4 * g1 * g2 * C**2)
    Q1n = sp.cancel(((1 + 2 * g2 * Q2) * Q1 - 2 * g2 * C**2) / D)
    Q2n = sp.cancel(((1 + 2 * g1 * Q1) * Q2 - 2 * g1 * C**2) / D)
    Cn = sp.cancel(C / D)
    return 1 / sp.sqrt(D), (Q1n, Q2n, Cn)


class _Expect:
    """E_Σ[u^m v^n A(u) B(v)] by integration by parts, memoised."""

    def __init__(self):
        self.memo: dict = {}

    def __call__(self, m: int, n: int, A, B, S) -> sp.Expr:
        if m < 0 or n < 0:
            return sp.S.Zero
        if (m + n + (A is not None) + (B is not None)) % 2:
            return sp.S.Zero  # odd integrand
        key = (m, n, A, B, S)
        if key in self.memo:
            return self.memo[key]
        limits.check()
        val = self._compute(m, n, A, B, S)
        self.memo[key] = val
        return val

    def _compute(self, m, n, A, B, S):
        Q1, Q2, C = S
        if A is None and B is None:
            return isserlis(m, n, Q1, Q2, C)
        if A is not None and m >= 1:
            # E[u·F], F = u^{m−1} v^n erf(Au) B(v)
            du = (m - 1) * self(m - 2, n, A, B, S)
            Z, Sa = _weight(A**2, 0, S)
            du += 2 * A / sp.sqrt(sp.pi) * Z * self(m - 1, n, None, B, Sa)
            dv = n * self(m - 1, n - 1, A, B, S)
            if B is not None:
                Zb, Sb = _weight(0, B**2, S)
                dv += 2 * B / sp.sqrt(sp.pi) * Zb * self(m - 1, n, A, None, Sb)
            return Q1 * du + C * dv
        if B is not None and n >= 1:
            dv = (n - 1) * self(m, n - 2, A, B, S)
            Z, Sb = _weight(0, B**2, S)
            dv += 2 * B / sp.sqrt(sp.pi) * Z * self(m, n - 1, A, None, Sb)
            du = m * self(m - 1, n - 1, A, B, S)
            if A is not None:
                Za, Sa = _weight(A**2, 0, S)
                du += 2 * A / sp.sqrt(sp.pi) * Za * self(m, n - 1, None, B, Sa)
            return Q2 * dv + C * du
        if A is not None and B is not None:  # m = n = 0
            return 2 / sp.pi * sp.asin(2 * A * B * C / sp.sqrt((1 + 2 * A**2 * Q1) * (1 + 2 * B**2 * Q2)))
        if A is not None:  # m = 0, B = 1, n ≥ 1: E[v·F], F = erf(Au) v^{n−1}
            Z, Sa = _weight(A**2, 0, S)
            return (C * 2 * A / sp.sqrt(sp.pi) * Z * self(0, n - 1, None, None, Sa)
                    + Q2 * (n - 1) * self(0, n - 2, A, None, S))
        Z, Sb = _weight(0, B**2, S)  # n = 0, A = 1, m ≥ 1
        return (C * 2 * B / sp.sqrt(sp.pi) * Z * self(m - 1, 0, None, None, Sb)
                + Q1 * (m - 1) * self(m - 2, 0, None, B, S))


def _dual_of_terms(terms: list[Term], E: _Expect) -> sp.Expr:
    S0 = (q1, q2, c)
    total = sp.S.Zero
    for ai, gi, pi in terms:
        for aj, gj, pj in terms:
            limits.check()
            if gi != 0 or gj != 0:
                Z, S = _weight(gi, gj, S0)
            else:
                Z, S = sp.S.One, S0
            part = sp.S.Zero
            for k, mk in enumerate(pi):
                if mk == 0:
                    continue
                for l, ml in enumerate(pj):
                    if ml != 0:
                        part += mk * ml * E(k, l, ai, aj, S)
            total += Z * part
    return total


def _simplify(expr: sp.Expr) -> sp.Expr:
    """Cheap tidying: collect the rational parts of each arcsin/sqrt group."""
    expr = sp.expand(expr, deep=False)
    out = []
    groups: dict = defaultdict(lambda: sp.S.Zero)
    for t in sp.Add.make_args(expr):
        limits.check()
        rational, irrational = t.as_independent(sp.asin, sp.Pow, as_Add=False)
        groups[irrational] += rational
    for irr, rat in groups.items():
        out.append(sp.factor(rat) * irr if rat.free_symbols else rat * irr)
    return sp.Add(*out)


def _rebuild(terms: list[Term]) -> sp.Expr:
    return sp.Add(*[sp.Add(*[m * x**j for j, m in enumerate(p)]) * (sp.erf(a * x) if a is not None else 1)
                    * sp.exp(-g * x**2) for a, g, p in terms])


def _derivative_terms(terms: list[Term]) -> list[Term] | None:
    """σ' in the class: (p erf(ax) e^{−gx²})' = (p' − 2g x p) erf e^{−gx²} + p·(2a/√π)·e^{−(g+a²)x²}."""
    out: dict[tuple, sp.Expr] = defaultdict(lambda: sp.S.Zero)
    for a, g, p in terms:
        poly = sp.Add(*[m * x**j for j, m in enumerate(p)])
        out[(a, g)] += sp.diff(poly, x) - 2 * g * x * poly
        if a is not None:
            out[(None, g + a**2)] += 2 * a / sp.sqrt(sp.pi) * poly
    res = []
    for (a, g), poly in out.items():
        poly = sp.expand(poly)
        if poly == 0:
            continue
        coeffs = sp.Poly(poly, x).all_coeffs()[::-1]
        res.append((a, g, tuple(coeffs)))
    return res


def erf_dual(expr: sp.Expr) -> Derived | None:
    """Closed-form dual of Σ p_t(x) erf(a_t x) e^{−g_t x²} + P(x), else None."""
    terms = decompose(expr)
    if terms is None:
        return None
    E = _Expect()
    k = _simplify(_dual_of_terms(terms, E))
    kdot = _simplify(_dual_of_terms(_derivative_terms(terms), E))
    return Derived(nngp=k, ntk=kdot, rule="erf-class")
