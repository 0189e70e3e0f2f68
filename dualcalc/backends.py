r"""Generated backends of fully connected networks: Numba (CPU) and CUDA (GPU, via CuPy).

``net.kernel(X, backend=...)`` lands here for every backend but "numpy":

* "numba" — :mod:`codegen.numba_target`: one fused parallel kernel per network;
* "cuda"  — :mod:`codegen.cuda_target`: the same recursion as CUDA C through CuPy
  (``precision="double"`` or ``"float"``), the Gram product from cuBLAS;
* "auto"  — "cuda" when a GPU is visible, else "numba".

Both read the network's program (:mod:`dualcalc.program`) and the per-point plan of
:func:`dualcalc.network.recursion_plan` (variances at every activation and LayerNorm,
Hermite tables), so the three backends agree to round-off.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from codegen.cuda_env import gpu_available, require_gpu  # the one GPU probe (re-exported)

from .errors import InputError, ParameterError

BACKENDS = ("auto", "numpy", "numba", "cuda")


def resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ParameterError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "auto":
        return "cuda" if gpu_available() else "numba"
    if backend == "cuda":
        require_gpu("backend='cuda'")
    return backend


def run_backend(net, X: np.ndarray, Y: np.ndarray | None, *, get: Sequence[str], backend: str,
                dtype=np.float64, **options):
    """Exact kernels of a fully connected network with a generated backend."""
    from .reference import Kernel, numpy_kernel, recursion_plan

    backend = resolve_backend(backend)
    if backend == "numpy":
        if options:
            raise ParameterError(f"the numpy backend takes no options, got {sorted(options)}")
        return numpy_kernel(net, X, Y, get)
    spec = net.program()
    plan = recursion_plan(net, X, Y)
    if np.dtype(dtype) == np.float32:  # the Gram product runs in float32: its entries must fit
        big = float(np.finfo(np.float32).max) / 4
        for A, name in ((X, "X"), (Y, "Y")):
            if A is not None and float(np.max(np.einsum("ij,ij->i", A, A, dtype=np.float64))) > big:
                raise InputError(f"the squared norms of the rows of {name} overflow float32; "
                                 "use dtype=float64 or rescale the data")
    if backend == "numba":
        from codegen import numba_target

        allowed = {"block_size", "progress", "out"}
        bad = set(options) - allowed
        if bad:
            raise ParameterError(f"unknown option(s) {sorted(bad)} for backend 'numba'; allowed: {sorted(allowed)}")
        K, T = numba_target.run(spec, plan, X, Y, get, dtype, **options)
    else:
        from codegen import cuda_target

        allowed = {"block_size", "progress", "precision", "return_device"}
        bad = set(options) - allowed
        if bad:
            raise ParameterError(f"unknown option(s) {sorted(bad)} for backend 'cuda'; allowed: {sorted(allowed)}")
        K, T = cuda_target.run(spec, plan, X, Y, get, dtype, **options)
    return Kernel(K, T)


def network_source(net, target: str = "numba", get: Sequence[str] | str = ("nngp", "ntk")) -> str:
    """The generated source text (the same text that is compiled and run)."""
    get = (get,) if isinstance(get, str) else tuple(get)
    if set(get) - {"nngp", "ntk"} or not get:
        raise ParameterError(f"get must name 'nngp' and/or 'ntk', got {get!r}")
    spec = net.program()
    if target == "numba":
        from codegen import numba_target

        return numba_target.generate(spec, get).source
    if target == "cuda":
        from codegen import cuda_target

        return cuda_target.generate(spec, get).source
    raise ParameterError(f"target must be 'numba' or 'cuda', got {target!r}")


def cache_info() -> dict:
    """Counters and folder of the generated-code cache of this process."""
    from codegen import cache

    return cache.info()
