"""Dual derivation: from an activation's SymPy expression to its dual (k, k̇).

Order of attempts (ARCHITECTURE.md, data flow): catalog match → symbolic rules
→ Hermite fallback.  Each rule module exposes functions returning a
:class:`~dualcalc.derive.result.Derived` or ``None`` when it does not apply.
"""
from .polynomial import polynomial_dual
from .arccos import rectified_monomial_dual
from .result import Derived

__all__ = ["Derived", "polynomial_dual", "rectified_monomial_dual"]
