r"""Rectified monomials σ(x) = 1[x ≥ 0]·xⁿ (Cho & Saul 2009, arc-cosine kernels).

    k(q1, q2, c) = (q1 q2)^{n/2} / (2π) · J_n(θ),  θ = arccos ρ,
    J_n(θ) = (−1)ⁿ (sin θ)^{2n+1} ((1/sin θ) ∂_θ)ⁿ [(π − θ)/sin θ],
    k̇_n = n² · k_{n−1}  (σ' = n·σ_{n−1});  n = 0 (step) has σ' = δ: k̇ = 0 by convention.
"""
from __future__ import annotations

from functools import lru_cache

import sympy as sp

from ..symbols import q1, q2, rho
from .result import Derived

_theta = sp.Symbol("theta", positive=True)


@lru_cache(maxsize=16)
def J(n: int) -> sp.Expr:
    """J_n as an expression in ρ (θ = arccos ρ, sin θ = √(1−ρ²))."""
    s = sp.sin(_theta)
    f = (sp.pi - _theta) / s
    for _ in range(n):
        f = sp.diff(f, _theta) / s
    jn = sp.simplify((-1) ** n * s ** (2 * n + 1) * f)
    return sp.simplify(jn.subs({sp.sin(_theta): sp.sqrt(1 - rho**2)}).subs(
        {sp.cos(_theta): rho}).subs(_theta, sp.acos(rho)))


def rectified_monomial_k(n: int) -> sp.Expr:
    return (q1 * q2) ** sp.Rational(n, 2) / (2 * sp.pi) * J(n)


def rectified_monomial_dual(n: int) -> Derived:
    """Closed-form dual of 1[x ≥ 0]·xⁿ for a non-negative integer n."""
    if int(n) != n or n < 0:
        raise ValueError(f"rectified monomial degree must be a non-negative integer, got {n}")
    n = int(n)
    k = rectified_monomial_k(n)
    if n == 0:
        return Derived(nngp=k, ntk=sp.S.Zero, rule="arc-cosine", ntk_convention="zero-a.e.")
    return Derived(nngp=k, ntk=n**2 * rectified_monomial_k(n - 1), rule="arc-cosine")
