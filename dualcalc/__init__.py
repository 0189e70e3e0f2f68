"""dualcalc: a symbolic dual-activation compiler for infinite-width NNGP/NTK kernels.

Public API (see ARCHITECTURE.md): ``activation``, ``register``, ``Activation``,
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

# sketches (issue 5): NNGP/NTK random features in time linear in n, ridge on them
from .sketch import KernelSketch, SketchRidge  # noqa: E402

__all__ += ["KernelSketch", "SketchRidge"]

# convolutional networks (issue 6): layers, Myrtle, exact CNNGP/CNTK (dualcalc/conv_kernel.py)
from .conv import AvgPool, Conv, Flatten, GlobalAvgPool, myrtle  # noqa: E402

__all__ += ["Conv", "AvgPool", "GlobalAvgPool", "Flatten", "myrtle"]
