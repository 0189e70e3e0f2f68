r"""The per-layer weighting of the activation sketch, shared by the fully connected
(:mod:`.kernel_sketch`), homogeneous (:mod:`.homogeneous`) and convolutional
(:mod:`.conv_sketch`) sketches: the random buckets and phases of a layer (:func:`weight_plan`),
the weighting itself through the generated kernels (:func:`weight`, see
:mod:`codegen.sketch_numba` for the formula) and the row rescaling of the normalized sketch
(:func:`rescale`).  It sits below the three estimators, so none of them imports another.
"""
from __future__ import annotations

import numpy as np

from .srht import array_module, random_phases


def balanced_buckets(rng, count: int, m: int) -> np.ndarray:
    """Buckets for ``count`` coordinates among m: distinct when count ≤ m, otherwise each
    bucket receives ⌊count/m⌋ or ⌈count/m⌉ of them (a random balanced assignment).

    Distinct buckets make the exact blocks (the constant and the linear term u) collision-free,
    so they pass into the Σ-sketch without error; uniform hashing would collide (birthday
    paradox) and a single collision between two large coordinates costs a lot of accuracy.
    """
    reps = -(-count // m)
    return (rng.permutation(reps * m)[:count] % m).astype(np.int64)


def weight_plan(rng, du: int, degree: int, m: int, ms: int) -> dict:
    """Random phases/buckets of one activation layer's weighting (see codegen.sketch_numba).

    The sketched blocks fill buckets 0..ms−1.  The constant term and the du coordinates of u
    go to the reserved buckets ms..m−1 when ms < m (distinct ones), else anywhere (distinct
    whenever du + 1 ≤ m, balanced otherwise).
    """
    L = degree
    plan = {"m": m, "ph_k": random_phases(rng, (max(L - 1, 0), ms)),
            "ph_d": random_phases(rng, (max(L - 2, 0), ms))}
    lo = ms if ms < m else 0
    for tag in ("k", "d"):
        b = lo + balanced_buckets(rng, du + 1, m - lo)
        plan[f"hu_{tag}"] = b[1:]
        plan[f"c0b_{tag}"] = int(b[0])
        plan[f"pu_{tag}"] = random_phases(rng, du)
        plan[f"c0p_{tag}"] = complex(random_phases(rng, 1)[0])
    return plan


def row_norms(A):
    """Euclidean norms of the rows of a real or complex (NumPy or CuPy) matrix."""
    xp = array_module(A)
    return xp.sqrt(xp.einsum("ij,ij->i", A.real, A.real) + xp.einsum("ij,ij->i", A.imag, A.imag)) \
        if xp.iscomplexobj(A) else xp.sqrt(xp.einsum("ij,ij->i", A, A))


def rescale(A, target, eps=0.0):
    """Rows of A rescaled to the given norms (rows of norm 0 left alone)."""
    xp = array_module(A)
    nrm = row_norms(A)
    f = xp.where(nrm > eps, xp.asarray(target) / xp.where(nrm > eps, nrm, 1.0), 0.0)
    A *= f[:, None].astype(A.real.dtype)
    return A


def weight(u, blocks, R, s, plan, deriv, backend):
    """ψ (and δ with ``deriv``) of one activation layer from its exact linear block u, the
    sketched blocks U_l and the coefficient table R (see :mod:`codegen.sketch_numba`):
    the generated CUDA kernel for ``backend="cuda"``, else the Numba one (or its NumPy
    reference for ``backend="numpy"``)."""
    if backend == "cuda":  # pragma: no cover - GPU
        from codegen.sketch_cuda import run_weighting_cuda

        return run_weighting_cuda(u, blocks, R, s, plan, derivative=deriv)
    from codegen.sketch_numba import run_weighting

    return run_weighting(u, blocks, R, s, plan, derivative=deriv,
                         backend="numpy" if backend == "numpy" else "numba")
