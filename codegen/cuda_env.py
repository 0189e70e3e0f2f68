r"""The CUDA environment, once for every CUDA target (fully connected, convolutional, sketch):

* the GPU probe — :func:`gpu_available`, :func:`gpu_unavailable_reason` and :func:`require_gpu`,
  which raises the one error (:class:`~dualcalc.errors.BackendError`) a missing GPU gets;
* the NVRTC compile path — :func:`nvrtc_available` and :func:`compile_ptx`, through CuPy's
  NVRTC bindings (``cupy_backends.cuda.libs.nvrtc``); it needs no GPU, so the CPU test suite
  checks that every generated CUDA source compiles to PTX.

CuPy is imported only inside the functions: importing this module costs nothing where the
``cuda`` extra is not installed.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from dualcalc.errors import BackendError

#: the virtual architecture of the PTX the tests and the build compile (Ampere and newer)
DEFAULT_ARCH = "compute_80"
#: the C++ dialect of every generated CUDA source (NVRTC and cupy.RawModule alike)
CXX_STD = "--std=c++14"


@functools.lru_cache(maxsize=1)
def _probe() -> tuple[bool, str]:
    try:
        import cupy
    except Exception as err:  # noqa: BLE001 - any import failure means "no GPU backend"
        return False, f"CuPy is not importable ({type(err).__name__}: {err}); pip install 'dualcalc[cuda]'"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # noqa: BLE001
        return False, f"no CUDA device or driver ({type(err).__name__}: {err})"
    if n < 1:
        return False, "CuPy sees no CUDA device"
    return True, f"{n} CUDA device(s)"


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device (probed once per process)."""
    return _probe()[0]


def gpu_unavailable_reason() -> str:
    """Why :func:`gpu_available` is False (or the device count when it is True)."""
    return _probe()[1]


def require_gpu(what: str) -> None:
    """Raise :class:`~dualcalc.errors.BackendError` naming ``what`` and the probe's reason
    unless a GPU is usable."""
    if not gpu_available():
        raise BackendError(f"{what} needs a CUDA GPU and CuPy: {gpu_unavailable_reason()}. "
                           "Use backend='numba' (CPU) or 'auto'.")


def nvrtc_available() -> tuple[bool, str]:
    """(True, "NVRTC x.y") when CuPy's NVRTC bindings load, else (False, why); no GPU needed."""
    try:
        from cupy_backends.cuda.libs import nvrtc

        v = nvrtc.getVersion()
        return True, f"NVRTC {v[0]}.{v[1]}"
    except Exception as err:  # noqa: BLE001
        return False, f"NVRTC is not available ({type(err).__name__}: {err}); pip install 'dualcalc[cuda]'"


def compile_ptx(source: str, arch: str = DEFAULT_ARCH, name: str = "dualcalc.cu") -> str:
    """Compile CUDA C to PTX with NVRTC (no GPU needed). Raises
    :class:`~dualcalc.errors.BackendError` when NVRTC is missing or the source does not compile
    (with NVRTC's log)."""
    ok, why = nvrtc_available()
    if not ok:
        raise BackendError(why)
    from cupy_backends.cuda.libs import nvrtc

    prog = nvrtc.createProgram(source, name, [], [])
    try:
        try:
            nvrtc.compileProgram(prog, [f"--gpu-architecture={arch}", CXX_STD])
        except Exception as err:  # noqa: BLE001 - NVRTCError: attach the compiler log
            log = nvrtc.getProgramLog(prog)
            raise BackendError(f"NVRTC could not compile the generated CUDA source {name}: {err}\n{log}") from None
        ptx = nvrtc.getPTX(prog)
    finally:
        nvrtc.destroyProgram(prog)
    return ptx.decode() if isinstance(ptx, bytes) else ptx


#: What the CUDA C of the generated kernels needs to compile as C++ on the host (CPU emulation:
#: one thread at a time; the launch loops are the caller's).
CPU_PRELUDE = r"""
#include <math.h>
struct dc_dim3 { unsigned x, y, z; };
static dc_dim3 blockIdx, threadIdx, blockDim, gridDim;
#define __global__
#define __device__ static inline
#define __forceinline__
#define __shared__ static
#define __restrict__
#define __syncthreads()
"""


def cxx_compiler() -> str | None:
    """The host C++ compiler for the CPU emulation ($CXX, else g++, c++ or clang++), or None."""
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


def compile_for_cpu(source: str, name: str, defines=()):
    """``source`` (CUDA C written for :data:`CPU_PRELUDE`, with ``extern "C"`` launchers) built as a
    shared library by the host compiler and loaded with ctypes: the tests' way to run generated CUDA
    without a GPU.  A missing compiler or a compile error is a :class:`BackendError`."""
    import ctypes

    cxx = cxx_compiler()
    if cxx is None:
        raise BackendError("no C++ compiler found to emulate the CUDA source on the CPU (set $CXX)")
    d = Path(tempfile.mkdtemp(prefix="dualcalc_cuda_emu_"))
    src, lib = d / f"{name}.cpp", d / f"{name}.so"
    src.write_text(source)
    flags = [f"-D{d}" for d in defines]
    r = subprocess.run([cxx, "-O1", "-shared", "-fPIC", *flags, "-x", "c++", str(src), "-o", str(lib)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise BackendError(f"the generated CUDA source does not compile for CPU emulation:\n{r.stderr[-4000:]}")
    return ctypes.CDLL(str(lib))
