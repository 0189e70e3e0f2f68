r"""Linear and tensor sketches on rows of a matrix: SRHT, TensorSRHT, CountSketch (docs/math.md §4).

All sketches act on the rows of an ``(n, D)`` array (real or complex) and return
complex rows whose *Hermitian* inner product estimates the input one without bias:

* :class:`SRHT`        ``S(x) = (1/√m)·(F Φ x)[P]``
* :class:`TensorSRHT`  ``T(x1, x2) = (1/√m)·(F Φ1 x1)[P1] ⊙ (F Φ2 x2)[P2]``
* :class:`CountSketch` ``C(x)_j = Σ_{h(i)=j} Φ_i x_i`` (works on scipy.sparse rows in O(nnz))

F is the unnormalised DFT of a length N ≥ max(D, m) (zero padding; any N works
because |F_pj| = 1), Φ = diag(e^{iθ_j}) holds independent uniform random phases
(unit-modulus "signs"), P is m distinct frequencies.  For every frequency p,
``E_Φ[(FΦx)_p · conj((FΦy)_p)] = Σ_j x_j conj(y_j)``, so each output coordinate is
unbiased on its own and ``E⟨S x, S y⟩ = ⟨x, y⟩`` exactly (likewise
``E⟨T(x1,x2), T(y1,y2)⟩ = ⟨x1,y1⟩⟨x2,y2⟩``).

Real outputs.  Uniform phases make every output coordinate *circular*:
``E[z_p(x) z_p(y)] = Σ_j F_pj² E[e^{2iθ_j}] x_j y_j = 0``.  Hence
``E[Re z_p(x) Re z_p(y)] = E[Im z_p(x) Im z_p(y)] = ½ Re⟨x, y⟩``: the real and the
imaginary part of a coordinate are each unbiased for half of it, and
:func:`to_real` turns ⌈m/2⌉ complex coordinates into exactly m real features (odd m: √2·Re
of one circular coordinate) whose ordinary inner product estimates Re⟨x, y⟩ without bias.
(With ±1 signs instead of phases this fails at p = 0, where Re·Re is biased.)

FFTs run through :mod:`scipy.fft` (or ``cupy.fft`` for CuPy arrays), vectorised over
rows; callers chunk the rows to bound memory.
"""
from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.sparse

__all__ = ["SRHT", "TensorSRHT", "CountSketch", "to_real", "fft_length", "random_phases",
           "complex_dtype", "array_module", "fft_rows"]


def complex_dtype(dtype) -> np.dtype:
    """complex64 for float32/complex64 data, complex128 otherwise."""
    dt = np.dtype(dtype)
    return np.dtype(np.complex64) if dt in (np.float32, np.complex64) else np.dtype(np.complex128)


def fft_length(*dims: int) -> int:
    """Smallest fast FFT length ≥ every dimension given."""
    return scipy.fft.next_fast_len(int(max(dims)))


def random_phases(rng: np.random.Generator, size) -> np.ndarray:
    """Independent uniform unit-modulus complex numbers e^{iθ}, θ ~ U[0, 2π)."""
    return np.exp(2j * np.pi * rng.random(size))


def array_module(a):
    """numpy, or cupy for a CuPy array."""
    mod = type(a).__module__
    if mod.startswith("cupy"):
        import cupy

        return cupy
    return np


def fft_rows(a, n: int):
    """Complex FFT of length n along the last axis (zero padded), scipy.fft or cupy.fft."""
    xp = array_module(a)
    if xp is np:
        return scipy.fft.fft(a, n=n, axis=-1, workers=-1, overwrite_x=True)
    return xp.fft.fft(a, n=n, axis=-1)


def spectrum_full(X, phases: np.ndarray, n_fft: int, dtype):
    """F Φ x (all n_fft frequencies) for the rows of X: phases applied while zero padding in one
    pass (:func:`~dualcalc.sketch._kernels.phase_pad`), then one in-place FFT."""
    xp = array_module(X)
    D = X.shape[1]
    ph = _phases_for(phases, D).astype(dtype)
    if xp is not np:  # pragma: no cover - GPU
        return xp.fft.fft(X * xp.asarray(ph), n=n_fft, axis=-1)
    from ._kernels import phase_pad

    buf = phase_pad(X, ph, n_fft, dtype)
    return scipy.fft.fft(buf, axis=-1, workers=-1, overwrite_x=True)


def spectrum_rows(X, phases: np.ndarray, n_fft: int, index: np.ndarray, dtype, scale: float = 1.0):
    """(F Φ x)[P]·scale for the rows of X."""
    Y = spectrum_full(X, phases, n_fft, dtype)
    if array_module(Y) is not np:  # pragma: no cover - GPU
        import cupy

        return Y[:, cupy.asarray(index)] * scale
    from ._kernels import gather

    return gather(Y, index, scale)


def _phases_for(phases: np.ndarray, cols: int) -> np.ndarray:
    """The first ``cols`` phases: a sketch drawn for dimension D also takes shorter rows
    (zero padded to D), which is how one node accepts a leaf or a node as input."""
    if cols > phases.shape[0]:
        raise ValueError(f"rows of dimension {cols} given to a sketch drawn for {phases.shape[0]}")
    return phases if cols == phases.shape[0] else phases[:cols]


def _as_device(arr, like):
    xp = array_module(like)
    return arr if xp is np else xp.asarray(arr)


class SRHT:
    """Subsampled randomised (Fourier) transform R^D or C^D → C^m.

    ``S(x) = (1/√m)·(F Φ x)[P]`` with N = fft_length(D, m), P = m distinct frequencies.
    E⟨Sx, Sy⟩ = ⟨x, y⟩ (Hermitian), and every output coordinate is circular.
    """

    def __init__(self, in_dim: int, out_dim: int, rng: np.random.Generator):
        if in_dim < 1 or out_dim < 1:
            raise ValueError(f"SRHT dimensions must be positive, got {in_dim} → {out_dim}")
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.n_fft = fft_length(in_dim, out_dim)
        self.phases = random_phases(rng, self.in_dim)
        self.index = np.sort(rng.choice(self.n_fft, self.out_dim, replace=False)).astype(np.int64)
        self.scale = 1.0 / np.sqrt(self.out_dim)

    def spectrum(self, X, dtype=np.complex128):
        """The sampled, scaled spectrum (n, m) of the rows of X (n, D)."""
        return spectrum_rows(X, self.phases, self.n_fft, self.index, np.dtype(dtype), self.scale)

    def __call__(self, X, dtype=None):
        dtype = complex_dtype(X.dtype if dtype is None else dtype)
        return self.spectrum(X, dtype)


class TensorSRHT:
    """Sketch of the tensor product x1 ⊗ x2 without forming it: C^{D1} × C^{D2} → C^m.

    ``T(x1, x2) = (1/√m)·(F Φ1 x1)[P1] ⊙ (F Φ2 x2)[P2]``; cost O(D log D + m) per row.
    E⟨T(x1,x2), T(y1,y2)⟩ = ⟨x1,y1⟩⟨x2,y2⟩ when Φ1, Φ2 are independent.
    """

    def __init__(self, in_dim1: int, in_dim2: int, out_dim: int, rng: np.random.Generator):
        if min(in_dim1, in_dim2, out_dim) < 1:
            raise ValueError("TensorSRHT dimensions must be positive")
        self.in_dim1, self.in_dim2, self.out_dim = int(in_dim1), int(in_dim2), int(out_dim)
        self.n_fft1 = fft_length(in_dim1, out_dim)
        self.n_fft2 = fft_length(in_dim2, out_dim)
        self.phases1 = random_phases(rng, self.in_dim1)
        self.phases2 = random_phases(rng, self.in_dim2)
        self.index1 = rng.choice(self.n_fft1, self.out_dim, replace=False).astype(np.int64)
        self.index2 = rng.choice(self.n_fft2, self.out_dim, replace=False).astype(np.int64)
        self.scale = 1.0 / np.sqrt(self.out_dim)

    def left(self, X1, dtype):
        """F Φ1 x1, all frequencies (cacheable when one left input meets several right ones)."""
        return spectrum_full(X1, self.phases1, self.n_fft1, np.dtype(dtype))

    def right(self, X2, dtype):
        """F Φ2 x2, all frequencies."""
        return spectrum_full(X2, self.phases2, self.n_fft2, np.dtype(dtype))

    def combine(self, A, B):
        """A[P1] ⊙ B[P2] / √m from the two full spectra, in one pass."""
        if array_module(A) is not np:  # pragma: no cover - GPU
            import cupy

            return A[:, cupy.asarray(self.index1)] * B[:, cupy.asarray(self.index2)] * self.scale
        from ._kernels import gather_mul

        return gather_mul(A, self.index1, B, self.index2, self.scale)

    def __call__(self, X1, X2, dtype=None):
        dtype = complex_dtype(np.result_type(X1.dtype, X2.dtype) if dtype is None else dtype)
        return self.combine(self.left(X1, dtype), self.right(X2, dtype))


class CountSketch:
    """C(x)_j = Σ_{i: h(i)=j} Φ_i x_i with a balanced random hash h and uniform phases Φ.

    E⟨Cx, Cy⟩ = ⟨x, y⟩.  Dense rows cost O(D), scipy.sparse rows O(nnz): the sparse
    product ``X @ C`` with C a sparse (D, m) matrix never densifies X.
    """

    def __init__(self, in_dim: int, out_dim: int, rng: np.random.Generator):
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        # balanced hash: distinct buckets when D ≤ m, else ⌊D/m⌋ or ⌈D/m⌉ per bucket (still
        # E⟨Cx, Cy⟩ = ⟨x, y⟩ through the phases; fewer collisions than a uniform hash)
        reps = -(-self.in_dim // self.out_dim)
        self.hash = rng.permutation(reps * self.out_dim)[: self.in_dim] % self.out_dim
        self.phases = random_phases(rng, self.in_dim)

    def matrix(self, dtype=np.complex128) -> scipy.sparse.csr_matrix:
        return scipy.sparse.csr_matrix((self.phases.astype(dtype), (np.arange(self.in_dim), self.hash)),
                                       shape=(self.in_dim, self.out_dim))

    def _buckets(self, dtype):
        """(m, D) CSR matrix whose rows are the buckets (cached per dtype)."""
        cache = self.__dict__.setdefault("_cache", {})
        key = np.dtype(dtype).str
        if key not in cache:
            cache[key] = self.matrix(dtype).T.tocsr()
        return cache[key]

    def __call__(self, X, dtype=None):
        dtype = complex_dtype(X.dtype if dtype is None else dtype)
        xp = array_module(X)
        if xp is not np:  # pragma: no cover - GPU
            import cupyx.scipy.sparse as cps

            CT = cps.csr_matrix(self.matrix(dtype).T.tocsr())
            return (CT @ X.astype(dtype).T).T
        CT = self._buckets(dtype)  # (m, D): rows are buckets
        if scipy.sparse.issparse(X):
            return np.asarray((X.tocsr().astype(dtype) @ CT.T).toarray())
        return np.ascontiguousarray((CT @ np.asarray(X, dtype=dtype).T).T)


def to_real(Z, n_real: int, dtype=np.float64):
    """Real features (n, n_real) from circular complex features Z (n, k), k = ⌈n_real/2⌉.

    Even n_real: ``[Re Z, Im Z]``, whose inner product is exactly Re⟨z(x), z(y)⟩.  Odd n_real:
    the first coordinate contributes only ``√2·Re z_0`` (unbiased for its full share because
    E[Re z_0(x) Re z_0(y)] = ½ Re E[z_0(x) conj z_0(y)] for a circular coordinate), the others
    both parts.  Only coordinate 0 needs to be circular, so callers keep exact terms elsewhere.
    """
    xp = array_module(Z)
    k = Z.shape[1]
    if k != (n_real + 1) // 2:
        raise ValueError(f"{k} complex features cannot make exactly {n_real} real ones")
    out = xp.empty((Z.shape[0], n_real), dtype=dtype)
    if n_real % 2 == 0:
        out[:, :k] = Z.real
        out[:, k:] = Z.imag
    else:
        out[:, 0] = np.sqrt(2.0) * Z[:, 0].real
        out[:, 1:k] = Z[:, 1:].real
        out[:, k:] = Z[:, 1:].imag
    return out
