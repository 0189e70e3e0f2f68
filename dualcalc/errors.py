"""Exceptions raised by dualcalc. Each names what went wrong and how to fix it."""
from __future__ import annotations


class DualcalcError(Exception):
    """Base class of every error dualcalc raises on purpose."""


class FormulaError(DualcalcError, ValueError):
    """A formula string was refused by the safe parser (syntax, token, size)."""


class UnknownActivationError(DualcalcError, KeyError):
    """A name is neither a catalog entry, a registered activation, nor a formula."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class ParameterError(DualcalcError, ValueError):
    """Missing, unknown or invalid activation parameter."""


class CatalogError(DualcalcError, ValueError):
    """A catalog TOML file is malformed."""


class DivergentError(DualcalcError, ValueError):
    """The Gaussian expectation of the activation (or its square) does not exist."""


class InputError(DualcalcError, ValueError):
    """Data handed to a kernel or sketch is malformed (NaN/Inf, shapes, dtype)."""


class BackendError(DualcalcError, RuntimeError):
    """A requested backend (numba, cuda) is unavailable or failed."""


class OutOfMemoryError(DualcalcError, MemoryError):
    """A request would need more memory than the machine has (said before allocating)."""
