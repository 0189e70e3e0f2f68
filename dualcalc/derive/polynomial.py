r"""Polynomial activations σ(x) = Σ_j m_j x^j (monomials, Hermite polynomials).

With r_l(q) = Σ_{i≥0} m_{l+2i} (l+2i)! / (2^i i! √(l!)) q^{(l+2i)/2} (docs/math.md §1),
k = Σ_l r_l(q1) r_l(q2) ρ^l, which is a polynomial in (q1, q2, c):

    k(q1, q2, c) = Σ_l A_l(q1) A_l(q2) c^l / l!,   A_l(q) = Σ_i m_{l+2i} (l+2i)!/(2^i i!) q^i,

and k̇ = ∂k/∂c (σ is smooth, Price's theorem).
"""
from __future__ import annotations

import sympy as sp

from ..symbols import c, q1, q2, x
from .result import Derived


def polynomial_dual(expr: sp.Expr) -> Derived | None:
    """Exact dual of a polynomial in x with numeric coefficients, else None."""
    if not expr.free_symbols <= {x}:
        return None
    try:
        poly = sp.Poly(sp.expand(expr), x)
    except sp.PolynomialError:
        return None
    if not all(coef.is_number for coef in poly.all_coeffs()):
        return None
    deg = poly.degree()
    m = [poly.coeff_monomial(x**j) for j in range(deg + 1)]

    def A(l: int, q: sp.Symbol) -> sp.Expr:
        return sum((m[l + 2 * i] * sp.factorial(l + 2 * i) / (2**i * sp.factorial(i)) * q**i
                    for i in range((deg - l) // 2 + 1)), sp.S.Zero)

    k = sp.expand(sum((A(l, q1) * A(l, q2) * c**l / sp.factorial(l) for l in range(deg + 1)), sp.S.Zero))
    return Derived(nngp=k, ntk=sp.expand(sp.diff(k, c)), rule="polynomial")
