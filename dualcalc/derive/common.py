"""Small helpers shared by the rule modules."""
from __future__ import annotations

from functools import lru_cache

import sympy as sp

from ..symbols import c, q1, q2, x


@lru_cache(maxsize=512)
def isserlis_terms(a: int, b: int) -> tuple[tuple[sp.Integer, int, int, int], ...]:
    """E[X^a Y^b] for a centred pair with Var X = s11, Var Y = s22, Cov = s12, as
    (coefficient, power of s11, power of s22, power of s12) tuples (Isserlis/Wick)."""
    out = []
    for k in range(min(a, b) + 1):
        if (a - k) % 2 or (b - k) % 2:
            continue
        i, j = (a - k) // 2, (b - k) // 2
        coef = sp.factorial(a) * sp.factorial(b) / (sp.factorial(k) * sp.factorial(i) * sp.factorial(j) * 2 ** (i + j))
        out.append((sp.Integer(coef), i, j, k))
    return tuple(out)


def isserlis(a: int, b: int, s11, s22, s12) -> sp.Expr:
    """E[X^a Y^b] for (X, Y) ~ N(0, [[s11, s12], [s12, s22]])."""
    return sp.Add(*[coef * s11**i * s22**j * s12**k for coef, i, j, k in isserlis_terms(a, b)])


def moment_1d(n: int, var) -> sp.Expr:
    """E[X^n], X ~ N(0, var)."""
    if n % 2:
        return sp.S.Zero
    return sp.factorial2(n - 1) * var ** (n // 2) if n else sp.S.One


def split_re_im(expr: sp.Expr, symbols=(q1, q2, c)) -> tuple[sp.Expr, sp.Expr]:
    """(Re, Im) of a polynomial in real ``symbols`` with complex numeric coefficients."""
    re_terms, im_terms = [], []
    for t in sp.Add.make_args(sp.expand(expr)):
        coeff, rest = t.as_independent(*symbols, as_Add=False)
        cr, ci = sp.expand_complex(coeff).as_real_imag()
        if cr != 0:
            re_terms.append(cr * rest)
        if ci != 0:
            im_terms.append(ci * rest)
    return sp.Add(*re_terms), sp.Add(*im_terms)


def poly_coeffs(expr: sp.Expr) -> list[sp.Expr] | None:
    """Coefficients m_0..m_d of a polynomial in x with numeric coefficients, else None."""
    if expr == 0:
        return [sp.S.Zero]
    try:
        p = sp.Poly(expr, x)
    except sp.PolynomialError:
        return None
    coeffs = p.all_coeffs()[::-1]
    if not all(sp.sympify(m).is_number for m in coeffs):
        return None
    return [sp.sympify(m) for m in coeffs]
