"""The SymPy symbols every module shares.

``x`` is the activation's argument.  Dual activations are expressions in the
variances ``q1``, ``q2`` and covariance ``c`` of a centred Gaussian pair
(u, v) ~ N(0, [[q1, c], [c, q2]]); ``rho`` = c / sqrt(q1 q2) is the
correlation, kept as its own symbol so numerical code can clip it to [-1, 1].
"""
from __future__ import annotations

import sympy as sp

x = sp.Symbol("x", real=True)
q1 = sp.Symbol("q1", positive=True)
q2 = sp.Symbol("q2", positive=True)
c = sp.Symbol("c", real=True)
rho = sp.Symbol("rho", real=True)

#: Names a user may not use for parameters: they denote the dual's arguments.
RESERVED = frozenset({"x", "q1", "q2", "c", "rho", "pi", "e", "E", "I", "oo"})


def rho_to_c(expr: sp.Expr) -> sp.Expr:
    """Replace the correlation symbol by c / sqrt(q1 q2) (the public form)."""
    return expr.subs(rho, c / sp.sqrt(q1 * q2))


def Phi(arg: sp.Expr) -> sp.Expr:
    """Standard normal CDF Φ(t) = (1 + erf(t/√2)) / 2."""
    return (1 + sp.erf(arg / sp.sqrt(2))) / 2
