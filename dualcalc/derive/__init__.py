"""Dual derivation: from an activation's SymPy expression to its dual (k, k̇).

Order of attempts (docs/architecture.md, data flow): catalog match → symbolic rules
→ Hermite fallback.  :func:`derive` (in :mod:`.engine`) runs recognition and the
rules under a time limit, validates and caches the result; each rule module
exposes a function returning a :class:`~dualcalc.derive.result.Derived` or
``None`` when it does not apply.
"""
from .arccos import rectified_monomial_dual
from .polynomial import polynomial_dual
from .result import Derived

__all__ = ["Derived", "derive", "polynomial_dual", "rectified_monomial_dual"]


def __getattr__(name):  # derive lazily: engine imports hermite/catalog machinery
    if name == "derive":
        from .engine import derive
        return derive
    raise AttributeError(name)
