"""Small Numba kernels that fuse the memory-bound steps around each FFT of a sketch.

* :func:`phase_pad`: ``out[:, :D] = X·Φ``, ``out[:, D:] = 0`` — one pass instead of numpy's
  zero-fill, multiply and scipy's padding copy.
* :func:`gather`: ``out[i, j] = Y[i, idx[j]]·scale``.
* :func:`gather_mul`: ``out[i, j] = A[i, ia[j]]·B[i, ib[j]]·scale`` — the TensorSRHT product of two
  full spectra in one pass (instead of two gathers and two multiplies).

Each is compiled lazily once per dtype signature and cached on disk by Numba.
"""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _phase_pad(X, ph, out):
    n, D = X.shape
    N = out.shape[1]
    for i in range(n):
        for j in range(D):
            out[i, j] = X[i, j] * ph[j]
        for j in range(D, N):
            out[i, j] = 0


@numba.njit(cache=True, nogil=True)
def _gather(Y, idx, scale, out):
    n = Y.shape[0]
    m = idx.shape[0]
    for i in range(n):
        for j in range(m):
            out[i, j] = Y[i, idx[j]] * scale


@numba.njit(cache=True, nogil=True)
def _gather_mul(A, ia, B, ib, scale, out):
    n = A.shape[0]
    m = ia.shape[0]
    for i in range(n):
        for j in range(m):
            out[i, j] = A[i, ia[j]] * B[i, ib[j]] * scale


def phase_pad(X, ph, n_fft, dtype):
    out = np.empty((X.shape[0], n_fft), dtype=dtype)
    _phase_pad(np.ascontiguousarray(X), np.ascontiguousarray(ph, dtype=dtype), out)
    return out


def gather(Y, idx, scale):
    out = np.empty((Y.shape[0], idx.shape[0]), dtype=Y.dtype)
    _gather(Y, idx, Y.dtype.type(scale), out)
    return out


def gather_mul(A, ia, B, ib, scale):
    out = np.empty((A.shape[0], ia.shape[0]), dtype=np.result_type(A.dtype, B.dtype))
    _gather_mul(A, ia, B, ib, out.dtype.type(scale), out)
    return out
