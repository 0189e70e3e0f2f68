r"""Networks: :func:`serial`, :func:`parallel`, :func:`repeat` and :class:`Network`, whose methods
give the exact NNGP/NTK, the generated source and the stax export — the API on top of the flow
layers → program → backends.

Conventions are neural-tangents' (docs/math.md §3), NTK parameterization by default:

* input:      K⁰(x, y) = ⟨x, y⟩ / d,  Θ⁰ = 0
* Dense:      K ← W² K + b²,  Θ ← W² Θ + K_new
* activation: K ← k(q_x, q_y, K),  Θ ← Θ · k̇(q_x, q_y, K),  q ← k(q, q, q)

where q_x = K(x, x) is each point's own variance at that layer.  Every layer of the
recursion only needs the pair's covariance and the two diagonal variances, which is what
lets the generated kernels run all layers in registers per entry.  A network lowers once to
its program (:meth:`Network.program`, :mod:`dualcalc.program`); the NumPy reference and the
per-point plan are :mod:`dualcalc.reference`, the generated backends :mod:`dualcalc.backends`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .activation import Activation
from .bounds import check_output_memory
from .errors import ParameterError
from .layers import (Dense, FanInConcat, FanInProd, FanInSum, FanOut, Identity, LayerNorm, Parallel,  # noqa: F401 - public
                     describe_sequence, is_fc_layer, lower)
from .program import Program
from .reference import (EXACT_TABLE_LIMIT, ActivationStep, Kernel, NormStep, RecursionPlan,  # noqa: F401 - re-exported
                        hermite_tables, numpy_kernel, recursion_plan, validate_inputs)


Layer = Dense | Activation


class Network:
    """A sequence of layers (see :func:`serial`) with exact kernels and generated source."""

    def __init__(self, layers: Sequence[object]):
        self.layers: tuple = tuple(layers)

    def __repr__(self) -> str:
        return "serial(" + ", ".join(repr(l) for l in self.layers) + ")"

    @property
    def depth(self) -> int:
        return sum(isinstance(l, Dense) for l in self.layers)

    def program(self) -> Program:
        """The network's program (:mod:`dualcalc.program`): what every fully connected backend
        runs; made once by the one lowering of :mod:`dualcalc.layers` (the layers are immutable).
        Raises :class:`~dualcalc.errors.ParameterError` for a network that cannot run (an
        activation on the raw input, branches left open, a standard Dense without the width)."""
        cached = self.__dict__.get("_program")
        if cached is None or cached[0] is not self.layers:
            if _has_spatial_layers(self):
                raise ParameterError("the fully connected program cannot hold Conv/pooling layers "
                                     "(convolutional networks have their own kernels)")
            cached = self._program = (self.layers, lower(self.layers))
        return cached[1]

    # -- exact kernels ------------------------------------------------------------
    def kernel(self, X, Y=None, *, get: Sequence[str] | str = ("nngp", "ntk"), backend: str = "auto",
               dtype=np.float64, **options) -> Kernel:
        """Exact NNGP/NTK between the rows of X (n1, d) and Y (n2, d) (Y=None: X with itself).

        backend: "numpy" (reference), "numba" (generated, CPU), "cuda" (generated, GPU),
        "auto" (cuda when a GPU is visible, else numba).
        dtype: float64 (default) or float32 for the Gram product and the outputs; the
        generated kernels run the layer recursion in float64 registers either way (CUDA
        has a float variant: ``options`` precision="float").
        options (generated backends): ``block_size`` (rows per panel: the Gram product and
        the recursion run panel by panel), ``progress`` (None: a tqdm bar on long runs;
        True/False), ``out`` (a pair of preallocated (n1, n2) arrays, e.g. np.memmap, to
        fill instead of allocating; None for an output not requested).

        Integer input is converted to ``dtype`` (documented conversion); NaN/Inf,
        1-D, empty, non-real or mismatched inputs raise :class:`~dualcalc.errors.InputError`.
        """
        if hasattr(X, "__dask_graph__") or hasattr(Y, "__dask_graph__"):  # Dask: lazy tiles (docs/dask.md)
            from .distributed import dask_kernel  # first: each tile comes back here in memory

            return dask_kernel(self, X, Y, get=get, backend=backend, dtype=dtype, **options)
        if _has_spatial_layers(self):  # convolutional networks: images, their own kernels
            from .conv_kernel import conv_kernel

            return conv_kernel(self, X, Y, get=get, backend=backend, dtype=dtype, **options)
        get = (get,) if isinstance(get, str) else tuple(get)
        bad = set(get) - {"nngp", "ntk"}
        if bad or not get:
            raise ParameterError(f"get must name 'nngp' and/or 'ntk', got {get!r}")
        X, Y = validate_inputs(X, Y, dtype)
        check_output_memory(X.shape[0], X.shape[0] if Y is None else Y.shape[0], get, dtype,
                            options.get("out"), temporaries=3 if backend == "numpy" else 0)
        if backend == "numpy":
            if options:
                raise ParameterError(f"the numpy backend takes no options, got {sorted(options)}")
            return numpy_kernel(self, X, Y, get)
        from .backends import run_backend  # generated backends live beside codegen

        return run_backend(self, X, Y, get=get, backend=backend, dtype=dtype, **options)

    def source(self, target: str = "numba", **options) -> str:
        """The generated source text that computes this network's kernels.

        ``target``: "numba" (a Python module of @njit functions), "cuda" (CUDA C with
        float and double kernels) or "jax" (a module whose ``make_stax()`` returns this
        network in neural-tangents' stax: what :meth:`to_stax` executes).  ``get`` (default
        both) selects the outputs of numba/cuda.
        """
        if target == "jax":  # a neural-tangents stax module (docs/predict.md); options width, q_range
            from .jax_source import network_source as jax_network_source

            width, q_range = options.pop("width", 512), options.pop("q_range", None)
            if options:
                raise ParameterError(f"source('jax') takes width and q_range, got {sorted(options)}")
            return jax_network_source(self._stax_layers(width), q_range)
        if _has_spatial_layers(self):
            from .conv_kernel import conv_source

            return conv_source(self, target, **options)
        from .backends import network_source

        return network_source(self, target, **options)

    def to_stax(self, width: int = 512, q_range: tuple[float, float] | None = None):
        """``(init_fn, apply_fn, kernel_fn)`` of the same network in neural-tangents' ``stax``: the
        module ``source("jax")`` shows, executed.  ``width``: the finite width of Dense layers
        without ``out_dim`` (the last one gets 1); it does not change the NTK-parameterization
        kernels.  ``q_range``: range of the Hermite tables (see :meth:`Activation.to_stax`)."""
        from .jax_source import network_to_stax

        return network_to_stax(self._stax_layers(width), q_range)

    def _stax_layers(self, width: int) -> list[tuple]:
        """("dense", W_std, b_std or None, parameterization, width) / ("act", Activation) rows
        for :mod:`dualcalc.jax_source`."""
        if _has_spatial_layers(self):
            raise ParameterError("to_stax / source('jax') export fully connected networks only")
        if not all(isinstance(l, Dense | Activation) for l in self.layers):
            raise ParameterError("to_stax / source('jax') export serial Dense/activation networks only "
                                 "(not branches or LayerNorm yet)")
        if isinstance(width, bool) or not isinstance(width, int | np.integer) or width < 1:
            raise ParameterError(f"width must be a positive integer, got {width!r}")
        dense = [i for i, l in enumerate(self.layers) if isinstance(l, Dense)]
        out = []
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Dense):
                w = layer.out_dim if layer.out_dim is not None else (1 if i == dense[-1] else int(width))
                out.append(("dense", float(layer.W_std), float(layer.b_std) if layer.has_bias else None,
                            layer.parameterization, w))
            else:
                out.append(("act", layer))
        return out


def serial(*layers) -> Network:
    """Compose layers: ``serial(Dense(1.5, 0.1), act, Dense(1.5, 0.1))``; a network given as a
    layer is inlined (``serial`` nests, as neural-tangents' ``stax.serial``).

    Activations may be given as Activation objects or names/formulas (``"relu"``).  An
    activation needs a Dense (or Conv) layer before it, which is checked when the network is
    run (a serial may be one branch of :func:`parallel`, which its input reaches through).
    """
    out = _layers(layers, "serial")
    if not out:
        raise ParameterError("serial() needs at least one layer")
    return Network(out)


def _layers(layers, where: str) -> list:
    from .activation import activation as make_activation

    out: list = []
    for i, layer in enumerate(layers):
        if isinstance(layer, Network):
            out.extend(layer.layers)
            continue
        if isinstance(layer, str):
            layer = make_activation(layer)
        if not is_fc_layer(layer) and not _is_layer(layer):
            raise ParameterError(f"{where}: layer {i} is not a dualcalc layer: {layer!r}")
        out.append(layer)
    return out


def parallel(*networks) -> Parallel:
    """Run network i on branch i of the input (after ``FanOut(n)``): neural-tangents'
    ``stax.parallel``.  Each argument is a network, a layer or an activation name;
    ``parallel(serial(act, Dense()), Identity())`` is a residual block's two branches."""
    if not networks:
        raise ParameterError("parallel() needs at least one network")
    branches = []
    for i, net in enumerate(networks):
        branches.append(tuple(_layers([net], f"parallel branch {i}")))
    return Parallel(tuple(branches))


def repeat(network, n: int) -> Network:
    """``network`` applied ``n`` times in sequence (neural-tangents' ``stax.repeat``)."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ParameterError(f"repeat needs a positive integer count, got {n!r}")
    return serial(*([network] * int(n)))


def _has_spatial_layers(net) -> bool:
    """A Conv/pooling layer anywhere in the network, inside parallel branches too."""
    return _spatial(net.layers)


def _spatial(layers) -> bool:
    return any(_is_layer(l) or (isinstance(l, Parallel) and any(_spatial(br) for br in l.branches)) for l in layers)


def _is_layer(obj) -> bool:
    """Other layer kinds (convolution, pooling) declare themselves with ``is_layer``."""
    return getattr(obj, "is_layer", False) is True


