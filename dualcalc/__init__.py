"""dualcalc: a symbolic dual-activation compiler for infinite-width NNGP/NTK kernels.

Write an activation as a formula or take one from the catalog; dualcalc derives its dual
activations k(q1, q2, c) = E[σ(u)σ(v)] and k̇ = E[σ'(u)σ'(v)] (closed form, or a norm-aware
Hermite series), generates the fused NNGP/NTK recursion of a network as Numba or CUDA source,
and builds randomized sketches whose inner products approximate those kernels.

    >>> import dualcalc as dc
    >>> act = dc.activation("x*erf(x)")          # any formula in x, or a catalog name
    >>> net = dc.serial(dc.Dense(1.5, 0.1), act, dc.Dense(1.5, 0.1))
    >>> k = net.kernel(X)                        # Kernel(nngp, ntk), neural-tangents conventions

Public API: activations (``activation``, ``register``, ``Activation``, ``Dual``), networks
(``Dense``, ``serial``, ``Network``, ``Kernel``; branches ``FanOut``, ``parallel``, ``FanInSum``,
``FanInProd``, ``FanInConcat``, ``Identity``, ``repeat``, ``LayerNorm`` as in neural-tangents; ``Conv``, ``AvgPool``, ``GlobalAvgPool``,
``SumPool``, ``GlobalSumPool``, ``Flatten``, ``myrtle``, ``wide_resnet`` for images), sketches (``KernelSketch``, ``SketchRidge``) and the
errors (every one a ``DualcalcError``). The mathematics is in docs/math.md, the structure
and how to extend it in docs/architecture.md.
"""
from .activation import Activation, activation, register
from .dual import Dual
from .errors import (BackendError, CatalogError, DivergentError, DualcalcError, FormulaError,
                     InputError, OutOfMemoryError, ParameterError, UnknownActivationError)
from .formula import parse_formula
from .network import (Dense, FanInConcat, FanInProd, FanInSum, FanOut, Identity, Kernel, LayerNorm, Network,
                      parallel, repeat, serial)

from ._version import __version__

__all__ = [
    "Activation", "Dual", "Dense", "Kernel", "Network", "serial", "activation", "register", "parse_formula",
    "FanOut", "parallel", "FanInSum", "FanInProd", "FanInConcat", "Identity", "repeat", "LayerNorm",
    "DualcalcError", "FormulaError", "UnknownActivationError", "ParameterError", "CatalogError",
    "DivergentError", "InputError", "BackendError", "OutOfMemoryError", "__version__",
]

# Sketches and convolutional layers are imported on first use (PEP 562): the sketches pull in
# scikit-learn, which would otherwise double the import time of every command.
_LAZY = {
    "KernelSketch": ".sketch", "SketchRidge": ".sketch",  # issue 5: random features, ridge on them
    "Conv": ".conv", "AvgPool": ".conv", "GlobalAvgPool": ".conv", "Flatten": ".conv",  # issue 6
    "SumPool": ".conv", "GlobalSumPool": ".conv",  # issue 14
    "myrtle": ".architectures", "wide_resnet": ".architectures",
    "GPKernel": ".gp", "KernelRegressor": ".gp",  # issue 16: scikit-learn
}
_LAZY_MODULES = {"predict"}  # dc.predict.gp_inference(...), as nt.predict
__all__ += list(_LAZY) + sorted(_LAZY_MODULES)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    if name in _LAZY_MODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'dualcalc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _LAZY_MODULES)
