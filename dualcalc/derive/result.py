"""What a derivation rule returns."""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp


@dataclass(frozen=True)
class Derived:
    """A closed-form dual found by a rule.

    ``nngp`` and ``ntk`` are SymPy expressions in ``q1, q2, c`` and optionally
    ``rho`` (= c/√(q1 q2), clipped to [−1, 1] when evaluated numerically).
    ``ntk_convention`` is ``"price"`` when k̇ = ∂k/∂c, or ``"zero-a.e."`` when σ'
    holds a delta and the layer passes no NTK (neural-tangents' convention).
    """

    nngp: sp.Expr
    ntk: sp.Expr
    rule: str
    ntk_convention: str = "price"
