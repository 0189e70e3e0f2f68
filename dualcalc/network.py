r"""Infinite-width networks built with :func:`serial`, and their exact NNGP/NTK.

Conventions are neural-tangents' (MATH.md §3), NTK parameterization by default:

* input:      K⁰(x, y) = ⟨x, y⟩ / d,  Θ⁰ = 0
* Dense:      K ← W² K + b²,  Θ ← W² Θ + K_new
* activation: K ← k(q_x, q_y, K),  Θ ← Θ · k̇(q_x, q_y, K),  q ← k(q, q, q)

where q_x = K(x, x) is each point's own variance at that layer.  Every layer of
the recursion only needs the pair's covariance and the two diagonal variances,
which is what lets the generated kernels run all layers in registers per entry.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .activation import Activation
from .errors import InputError, ParameterError


class Kernel(NamedTuple):
    """NNGP and NTK matrices of shape (n1, n2); an entry is None when not requested."""

    nngp: np.ndarray | None
    ntk: np.ndarray | None


@dataclass(frozen=True)
class Dense:
    """Fully connected layer of infinite width.

    NTK parameterization (default): K ← W_std² K + b_std², Θ ← W_std² Θ + K_new.
    Standard parameterization: the same K, Θ ← width_in·K_old + W_std² Θ (+ 1 with a bias),
    where width_in is the previous Dense layer's ``out_dim`` (the data dimension d
    for the first layer).
    """

    W_std: float = 1.0
    b_std: float = 0.0
    parameterization: str = "ntk"
    out_dim: int | None = None

    def __post_init__(self):
        for name in ("W_std", "b_std"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or isinstance(v, bool) or not np.isfinite(v) or v < 0:
                raise ParameterError(f"Dense {name} must be a finite non-negative number, got {v!r}")
        if self.parameterization not in ("ntk", "standard"):
            raise ParameterError(f"parameterization must be 'ntk' or 'standard', got {self.parameterization!r}")


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

    # -- exact kernels ------------------------------------------------------------
    def kernel(self, X, Y=None, *, get: Sequence[str] | str = ("nngp", "ntk"), backend: str = "auto",
               dtype=np.float64, **options) -> Kernel:
        """Exact NNGP/NTK between the rows of X (n1, d) and Y (n2, d) (Y=None: X with itself).

        backend: "numpy" (reference), "numba" (generated, CPU), "cuda" (generated, GPU),
        "auto" (cuda when a GPU is visible, else numba).
        """
        if hasattr(X, "__dask_graph__") or hasattr(Y, "__dask_graph__"):  # Dask: lazy tiles (docs/dask.md)
            from .distributed import dask_kernel

            return dask_kernel(self, X, Y, get=get, backend=backend, dtype=dtype, **options)
        get = (get,) if isinstance(get, str) else tuple(get)
        bad = set(get) - {"nngp", "ntk"}
        if bad or not get:
            raise ParameterError(f"get must name 'nngp' and/or 'ntk', got {get!r}")
        X, Y = validate_inputs(X, Y, dtype)
        if backend == "numpy":
            return numpy_kernel(self, X, Y, get)
        from .backends import run_backend  # generated backends live beside codegen

        return run_backend(self, X, Y, get=get, backend=backend, dtype=dtype, **options)

    def source(self, target: str = "numba") -> str:
        """The generated source text that computes this network's kernels."""
        from .backends import network_source

        return network_source(self, target)


def serial(*layers) -> Network:
    """Compose layers: ``serial(Dense(1.5, 0.1), act, Dense(1.5, 0.1))``.

    Activations may be given as Activation objects or names/formulas (``"relu"``).
    An activation must follow a Dense layer, as in neural-tangents.
    """
    from .activation import activation as make_activation

    out: list = []
    for i, layer in enumerate(layers):
        if isinstance(layer, Network):
            out.extend(layer.layers)
            continue
        if isinstance(layer, str):
            layer = make_activation(layer)
        if not isinstance(layer, Dense | Activation) and not _is_layer(layer):
            raise ParameterError(f"layer {i} is not a dualcalc layer: {layer!r}")
        out.append(layer)
    if not out:
        raise ParameterError("serial() needs at least one layer")
    prev = None
    for i, layer in enumerate(out):
        if isinstance(layer, Activation) and prev is None:
            raise ParameterError(
                f"layer {i} ({layer.label}) is an activation applied to the raw input; "
                "put a Dense (or Conv) layer before it, as neural-tangents requires")
        prev = layer
    return Network(out)


def _is_layer(obj) -> bool:
    """Other layer kinds (convolution, pooling) declare themselves with ``is_layer``."""
    return getattr(obj, "is_layer", False) is True


def validate_inputs(X, Y, dtype=np.float64) -> tuple[np.ndarray, np.ndarray | None]:
    """Check shapes and values; return float arrays (float64 unless float32 asked)."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise InputError(f"dtype must be float32 or float64, got {dtype}")

    def one(A, name):
        if A is None:
            return None
        if hasattr(A, "toarray") and not isinstance(A, np.ndarray):
            raise InputError(f"{name} is a sparse matrix; exact kernels need dense arrays "
                             "(KernelSketch accepts scipy.sparse input)")
        A = np.asarray(A)
        if A.dtype.kind not in "fiu":
            raise InputError(f"{name} must hold real numbers, got dtype {A.dtype}")
        if A.dtype.kind in "iu":
            A = A.astype(np.float64)  # documented conversion: integers become float64
        if A.ndim != 2:
            raise InputError(f"{name} must be 2-D (n_samples, n_features), got shape {A.shape}")
        if A.shape[0] == 0 or A.shape[1] == 0:
            raise InputError(f"{name} is empty (shape {A.shape})")
        if not np.all(np.isfinite(A)):
            bad = np.argwhere(~np.isfinite(A))[0]
            raise InputError(f"{name} contains NaN or Inf (first at row {bad[0]}, column {bad[1]})")
        return np.ascontiguousarray(A, dtype=dtype)

    X = one(X, "X")
    Y = one(Y, "Y")
    if Y is not None and Y.shape[1] != X.shape[1]:
        raise InputError(f"X has {X.shape[1]} features but Y has {Y.shape[1]}")
    return X, Y


def layer_program(net: Network) -> list[tuple]:
    """The network as a flat program the emitters read.

    ``("dense", W², b², std_width)`` with ``std_width`` None for the NTK parameterization
    (else the previous width), and ``("act", Activation)``.
    """
    prog: list[tuple] = []
    width = None  # None: the data dimension, filled at run time
    for layer in net.layers:
        if isinstance(layer, Dense):
            std = None if layer.parameterization == "ntk" else (width if width is not None else "d")
            prog.append(("dense", float(layer.W_std) ** 2, float(layer.b_std) ** 2, std))
            width = layer.out_dim
        elif isinstance(layer, Activation):
            prog.append(("act", layer))
        else:
            prog.append(("layer", layer))
    return prog


def numpy_kernel(net: Network, X: np.ndarray, Y: np.ndarray | None, get=("nngp", "ntk")) -> Kernel:
    """Reference backend: the recursion with whole-matrix NumPy operations (float64)."""
    X64 = X.astype(np.float64)
    Y64 = X64 if Y is None else Y.astype(np.float64)
    d = X64.shape[1]
    K = X64 @ Y64.T / d
    qx = np.einsum("ij,ij->i", X64, X64) / d
    qy = qx if Y is None else np.einsum("ij,ij->i", Y64, Y64) / d
    T = np.zeros_like(K)
    want_ntk = "ntk" in get
    for op in layer_program(net):
        if op[0] == "dense":
            _, w2, b2, std = op
            if std is None:
                K = w2 * K + b2
                qx, qy = w2 * qx + b2, w2 * qy + b2
                if want_ntk:
                    T = w2 * T + K
            else:
                width = d if std == "d" else std
                if width is None:
                    raise ParameterError("standard parameterization needs out_dim on the previous Dense")
                Kold = K
                K = w2 * K + b2
                qx, qy = w2 * qx + b2, w2 * qy + b2
                if want_ntk:
                    T = width * Kold + w2 * T + (1.0 if b2 > 0 else 0.0)
        elif op[0] == "act":
            act: Activation = op[1]
            Qx, Qy = np.broadcast_arrays(qx[:, None], qy[None, :])
            if want_ntk:
                T = T * act.ntk(Qx, Qy, K)
            K = act.nngp(Qx, Qy, K)
            qx = act.nngp(qx, qx, qx)
            qy = qx if Y is None else act.nngp(qy, qy, qy)
        else:
            raise ParameterError(f"the numpy backend of fully connected networks cannot run {op[1]!r}")
    out_dtype = X.dtype
    return Kernel(K.astype(out_dtype) if "nngp" in get else None,
                  T.astype(out_dtype) if want_ntk else None)
