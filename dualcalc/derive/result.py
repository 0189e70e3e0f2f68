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
    holds a delta: then ``ntk`` is E[σ'(u)σ'(v)] with σ' the almost-everywhere
    derivative (the delta dropped; 0 for sign and step), as in neural-tangents.

    ``domain``: expressions that must all be > 0 for the Gaussian expectation to
    exist (only for activations growing like exp(γx²), γ > 0); empty otherwise.
    ``q_max``: the largest variance q with k(q, q, q) finite (``None``: no limit).
    ``detail``: free text, e.g. the parameters a recognised catalog entry was matched with.
    """

    nngp: sp.Expr
    ntk: sp.Expr
    rule: str
    ntk_convention: str = "price"
    domain: tuple = ()
    q_max: float | None = None
    detail: str = ""
