r"""Exact CNNGP / CNTK of convolutional networks (docs/math.md §3, neural-tangents conventions).

For an image pair (x, y) the recursion carries the pixel-pair covariance K[i, j] and NTK
Θ[i, j] (P×P numbers for P pixels) through the layers; every activation needs the pixel
variances q_x(i) = K_xx[i, i], q_y(j) = K_yy[j, j] of the two images' own recursions.
So the work is organised in two passes:

1. *self pass* — each image's own P×P recursion, run once per image (O(n·P²)); it records
   the pixel variances at every activation (and, for Hermite duals, the per-pixel
   coefficients r_l(q)) and gives the diagonal K(x, x) of the result;
2. *pair pass* — every other pair (only the upper triangle for K(X, X)), each through all
   layers with buffers that live in the thread doing the pair, never n²·P²: the generated
   Numba pass streams the layers by rows of x-pixels and keeps a few rows of each P×P state
   (:func:`codegen.conv_numba.schedule`), the reference holds them whole.

Backends: "numpy" (:mod:`dualcalc.conv_reference`: a plain vectorised reference holding all
pairs at once, for small problems and tests; its self pass also serves the generated
backends' Hermite networks), "numba" (generated source, :mod:`codegen.conv_numba`),
"cuda" (generated CUDA C, :mod:`codegen.conv_cuda`), "auto" (cuda when a GPU is visible,
else numba).  The generated passes run serial programs (:attr:`ImageProgram.serial`: stride-1
convolutions, stride = window average pools); networks with branches, strides, padded or sum
pooling or LayerNorm run on the NumPy reference: "auto" picks it with a warning, "numba" and
"cuda" raise :class:`~dualcalc.errors.BackendError`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .bounds import check_output_memory
from .conv import image_program, validate_images
from .conv_reference import image_tables, numpy_conv_kernel, self_recursion  # noqa: F401 - re-exported
from .errors import BackendError, ParameterError
from .reference import Kernel
from .warn import warn

BACKENDS = ("auto", "numpy", "numba", "cuda")


def _parse_get(get) -> tuple[str, ...]:
    get = (get,) if isinstance(get, str) else tuple(get)
    bad = set(get) - {"nngp", "ntk"}
    if bad or not get:
        raise ParameterError(f"get must name 'nngp' and/or 'ntk', got {get!r}")
    return get


def conv_kernel(net, X, Y=None, *, get: Sequence[str] | str = ("nngp", "ntk"), backend: str = "auto",
                dtype=np.float64, **options) -> Kernel:
    """Exact NNGP/NTK between NHWC image batches X (n1, H, W, C) and Y (n2, H, W, C).

    ``Y=None`` computes K(X, X) using its symmetry.  Everything runs in float64; a float32
    ``dtype`` only converts the result.  ``options`` go to the backend (numba:
    ``chunk``, the number of images per self-pass batch).
    """
    get = _parse_get(get)
    if backend not in BACKENDS:
        raise ParameterError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    X, Y = validate_images(X, Y, np.float64)
    prog = image_program(net, X.shape[1:])
    if not prog.serial:
        backend = _reference_only(prog, backend)
    pixels = X.shape[1] * X.shape[2]  # the NumPy reference holds (n1, n2, P, P) states
    check_output_memory(X.shape[0], X.shape[0] if Y is None else Y.shape[0], get, np.float64,
                        temporaries=3 * pixels * pixels if backend == "numpy" else 0)
    if backend == "auto":
        from codegen.conv_cuda import cuda_available

        backend = "cuda" if cuda_available() else "numba"
    if backend == "numpy":
        K, T = numpy_conv_kernel(prog, X, Y, get)
    elif backend == "numba":
        from codegen.conv_numba import numba_conv_kernel

        K, T = numba_conv_kernel(prog, X, Y, get, **options)
    else:
        from codegen.conv_cuda import cuda_conv_kernel

        K, T = cuda_conv_kernel(prog, X, Y, get, **options)
    out = np.dtype(dtype)
    return Kernel(None if K is None else K.astype(out, copy=False),
                  None if T is None else T.astype(out, copy=False))


def _reference_only(prog, backend: str) -> str:
    """The backend for a program the generated passes do not run yet (branches, strides, strided
    or padded or sum pooling, LayerNorm): "auto" becomes "numpy" with a warning (its memory,
    n1·n2·P² numbers, is checked next); "numba"/"cuda" raise :class:`BackendError`."""
    why = "; ".join(prog.unsupported[:3]) + ("; ..." if len(prog.unsupported) > 3 else "")
    if backend in ("numba", "cuda"):
        raise BackendError(f"the generated {backend} convolution passes run serial networks of stride-1 "
                           f"convolutions and stride = window average pooling only, not this network ({why}); "
                           "use backend='numpy' (the reference, memory n1·n2·P² per call) for now")
    if backend == "auto":
        warn("this convolutional network (branches, strides, sum pooling or LayerNorm) runs on the NumPy "
             "reference: the generated Numba/CUDA passes do not support it yet. It holds all pixel pairs "
             "of all image pairs at once (n1·n2·P² numbers): call it on blocks of images",
             key=("conv-reference-only",))
        return "numpy"
    return backend


def conv_source(net, target: str = "numba", input_shape=(32, 32, 3), get=("nngp", "ntk")) -> str:
    """The generated source of a convolutional network's exact kernel for images of
    ``input_shape`` (H, W, C) (sizes are compiled into the code)."""
    prog = image_program(net, tuple(input_shape))
    want_ntk = "ntk" in _parse_get(get)
    if not prog.serial and target in ("numba", "cuda"):
        _reference_only(prog, target)
    if target == "numba":
        from codegen.conv_numba import generate

        return generate(prog, want_ntk).source
    if target == "cuda":
        from codegen.conv_cuda import generate

        return generate(prog, want_ntk).source
    raise ParameterError(f"target must be 'numba' or 'cuda', got {target!r}")
