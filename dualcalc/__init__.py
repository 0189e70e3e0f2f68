"""dualcalc: a symbolic dual-activation compiler for infinite-width NNGP/NTK kernels.

Public API (see docs/architecture.md): ``activation``, ``register``, ``Activation``,
``Dual`` and the errors; networks, kernels and sketches are re-exported here as
they land.
"""
from .activation import Activation, activation, register
from .dual import Dual
from .errors import (BackendError, CatalogError, DivergentError, DualcalcError, FormulaError,
                     InputError, ParameterError, UnknownActivationError)
from .formula import parse_formula
from .network import Dense, Kernel, Network, serial

__version__ = "0.1.0"

__all__ = [
    "Activation", "Dual", "Dense", "Kernel", "Network", "serial", "activation", "register", "parse_formula",
    "DualcalcError", "FormulaError", "UnknownActivationError", "ParameterError", "CatalogError",
    "DivergentError", "InputError", "BackendError", "__version__",
]

# Sketches and convolutional layers are imported on first use (PEP 562): the sketches pull in
# scikit-learn, which would otherwise double the import time of every command.
_LAZY = {
    "KernelSketch": ".sketch", "SketchRidge": ".sketch",  # issue 5: random features, ridge on them
    "Conv": ".conv", "AvgPool": ".conv", "GlobalAvgPool": ".conv", "Flatten": ".conv",  # issue 6
    "myrtle": ".conv",
}
__all__ += list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dualcalc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
