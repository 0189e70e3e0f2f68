r"""Subspace embedding of homogeneous NNGP and NTK (Han et al. 2022, "Subspace Embedding of
Homogeneous NNGP and NTK"), with a near input-sparsity first layer.

When every activation is positively p-homogeneous (ReLU family, abs, monomials, rectified
monomials, …) and no Dense layer has a bias (NTK parameterization), the whole network is a
function of the input correlation ρ₀ = ⟨x, y⟩/(‖x‖‖y‖) times the diagonals:

    K(x, y) = √(K(x,x) K(y,y)) · F(ρ₀),     Θ(x, y) = √(K(x,x) K(y,y)) · T(ρ₀)

with F, T from the normalised duals κ(ρ) = k(1,1,ρ), κ̇(ρ) = k̇(1,1,ρ), layer by layer:
Dense: T ← T + F;  activation: T ← T·κ̇(F)/κ(1),  F ← κ(F)/κ(1)  (starting at F = ρ₀, T = 0).
(Proof: by homogeneity k(q₁,q₂,c) = (q₁q₂)^{p/2}κ(ρ) and k̇ = (q₁q₂)^{(p−1)/2}κ̇(ρ); the W²
factors cancel in the normalised quantities.)  F and T are positive-definite dot-product
kernels on every sphere, so their Taylor coefficients are non-negative.

The embedding: fit G ∈ {F, T} on [−1, 1] by a polynomial Σ_l c_l ρ^l with c_l ≥ 0 (non-negative
least squares on a grid uniform in θ = arccos ρ — uniformly accurate, unlike the Taylor
truncation, which converges slowly at ρ = 1 for ReLU's NTK), then

    Z(x) = √K(x,x) · ⊕_l √c_l U_l(x/‖x‖)     (one PolySketch of the unit input)

compressed by a phase Σ-sketch into the output.  E⟨Z(x), Z(y)⟩ = √(K_xx K_yy) Σ c_l ρ₀^l
exactly (every U_l is unbiased for ρ₀^l and the input norm is exact).

Near input-sparsity: for scipy.sparse input the PolySketch leaves are independent
CountSketches of x/‖x‖ (O(nnz) each, never densified); everything after them is dense in
the sketch dimension.  Cost per point O(L·nnz(x) + L·m log m).
"""
from __future__ import annotations

import numpy as np
import scipy.optimize
import scipy.sparse

from ..errors import ParameterError
from .coefficients import CoefficientTable, diagonal_recursion, homogeneous_degree
from .polysketch import PolySketch
from .srht import array_module, complex_dtype, random_phases, to_real
from .weighting import balanced_buckets, rescale, weight

__all__ = ["homogeneous_eligible", "composed_function", "fit_nonnegative_polynomial", "HomogeneousPlan"]


def homogeneous_eligible(prog: list[tuple], kernel: str, explain: bool = False):
    """True when the network's kernel is √(K_xx K_yy)·G(ρ₀) (see the module docstring)."""
    def no(reason):
        return reason if explain else False

    for op in prog:
        if op[0] == "dense":
            _, _w2, b2, std = op
            if b2 > 0:
                return no("a Dense layer has a bias (b_std > 0)")
            if std is not None:
                return no("a Dense layer uses the standard parameterization")
        elif op[0] == "act":
            act = op[1]
            if homogeneous_degree(act) is None:
                return no(f"activation {act.label!r} is not known to be homogeneous")
            if kernel == "ntk" and act.dual.ntk_convention == "zero-a.e.":
                return no(f"activation {act.label!r} has a delta derivative")
        else:
            return no(f"layer {op[1]!r} is not fully connected")
    return True


def composed_function(prog: list[tuple], rho: np.ndarray, kernel: str) -> np.ndarray:
    """F(ρ₀) (kernel="nngp") or T(ρ₀) (kernel="ntk") of a homogeneous network, vectorised."""
    f = np.clip(np.asarray(rho, dtype=np.float64), -1.0, 1.0)
    t = np.zeros_like(f)
    one = np.ones(1)
    for op in prog:
        if op[0] == "dense":
            t = t + f
        else:
            act = op[1]
            k1 = float(act.nngp(one, one, one)[0])
            if kernel == "ntk":
                t = t * np.asarray(act.ntk(np.ones_like(f), np.ones_like(f), f)) / k1
            f = np.clip(np.asarray(act.nngp(np.ones_like(f), np.ones_like(f), f)) / k1, -1.0, 1.0)
    return t if kernel == "ntk" else f


def fit_nonnegative_polynomial(g, degree: int, n_grid: int = 1025) -> np.ndarray:
    """c ≥ 0 minimising Σ_grid (Σ_l c_l ρ^l − g(ρ))² on ρ = cos θ, θ uniform in [0, π]."""
    rho = np.cos(np.linspace(0.0, np.pi, n_grid))
    V = rho[:, None] ** np.arange(degree + 1)[None, :]
    c, _ = scipy.optimize.nnls(V, g(rho), maxiter=50 * (degree + 1))
    return c


class HomogeneousPlan:
    """The drawn sketch of the homogeneous embedding (fitted state of KernelSketch)."""

    @classmethod
    def draw(cls, prog, d, m, mp, kernel, degree, max_degree, tol, K0, gen, sparse):
        self = cls()
        self.prog, self.kernel, self.d, self.m = prog, kernel, d, m
        self.k_out = (m + 1) // 2
        g = lambda r: composed_function(prog, r, kernel)  # noqa: E731
        # choose the degree on the subsample's correlations (relative Frobenius error)
        q0 = np.diag(K0).copy()
        acts = [op[1] for op in prog if op[0] == "act"]
        tables = [CoefficientTable(a, 1) for a in acts]
        diag = diagonal_recursion(prog, q0, d, [lambda q, t=t: t(q)[1] for t in tables])["nngp"]
        sq0 = np.sqrt(q0)
        with np.errstate(divide="ignore", invalid="ignore"):
            S0 = np.outer(sq0, sq0)
            rho0 = np.where(S0 > 0, np.clip(K0 / np.where(S0 > 0, S0, 1.0), -1, 1), 0.0)
        N = np.sqrt(np.outer(diag, diag))
        target = N * g(rho0)
        nt = np.linalg.norm(target) or 1.0

        def err(c):
            return float(np.linalg.norm(N * np.polyval(c[::-1], rho0) - target) / nt)

        if degree is None:
            for L in range(1, int(max_degree) + 1):
                c = fit_nonnegative_polynomial(g, L)
                e = err(c)
                if e <= tol:
                    break
        else:
            if np.ndim(degree):
                if len(degree) != 1:
                    raise ParameterError("the homogeneous embedding takes one degree for the whole network")
                degree = degree[0]
            L = int(degree)
            if L < 1:
                raise ParameterError(f"degree must be ≥ 1, got {degree}")
            c = fit_nonnegative_polynomial(g, L)
            e = err(c)
        self.degree, self.coef, self.fit_error = L, c, e
        self.sparse_leaves = bool(sparse)
        leaves = "countsketch" if sparse else "exact"
        du = mp if sparse else d
        # exact terms (constant, linear) get reserved collision-free buckets when few
        ms = self.k_out - (du + 1) if 2 * (du + 1) <= self.k_out else self.k_out
        self.poly = PolySketch(d, max(L, 1), ms, gen, leaves=leaves, leaf_dim=mp)
        lo = ms if ms < self.k_out else 0
        b = lo + balanced_buckets(gen, du + 1, self.k_out - lo)
        self.wplan = {
            "m": self.k_out, "hu_k": b[1:], "c0b_k": int(b[0]), "pu_k": random_phases(gen, du),
            "ph_k": random_phases(gen, (max(L - 1, 0), ms)),
            "c0p_k": complex(random_phases(gen, 1)[0]),
        }
        self.tables = tables
        return self

    def transform(self, X, out_dtype, chunk, normalize, backend, cdt=None):
        n, d = X.shape
        cdt = np.dtype(cdt) if cdt is not None else complex_dtype(out_dtype)
        rdt = np.float32 if cdt == np.complex64 else np.float64
        if scipy.sparse.issparse(X):
            nrm2 = np.asarray(X.multiply(X).sum(axis=1)).ravel()
        else:
            X64 = X.astype(np.float64, copy=False)
            nrm2 = np.einsum("ij,ij->i", X64, X64)
        q0 = nrm2 / d
        diag = diagonal_recursion(self.prog, q0, d, [lambda q, t=t: t(q)[1] for t in self.tables])["nngp"]
        scale = np.sqrt(np.maximum(diag, 0.0))
        inv = np.where(nrm2 > 0, 1.0 / np.sqrt(np.where(nrm2 > 0, nrm2, 1.0)), 0.0)
        sqc = np.sqrt(self.coef)
        Z = np.empty((n, self.m), dtype=out_dtype)
        xp = np
        if backend == "cuda":  # pragma: no cover - GPU
            import cupy as xp
        for s0 in range(0, n, chunk):
            rows = slice(s0, min(n, s0 + chunk))
            Xc = X[rows]
            if scipy.sparse.issparse(Xc):
                U_in = scipy.sparse.diags(inv[rows]) @ Xc  # unit rows, still sparse
            else:
                U_in = np.asarray(Xc, dtype=rdt) * inv[rows, None].astype(rdt)
                if xp is not np:  # pragma: no cover - GPU
                    U_in = xp.asarray(U_in)
            Us = self.poly.transform(U_in, cdt)
            u = Us[0]
            if scipy.sparse.issparse(u):  # pragma: no cover - countsketch leaves are dense
                u = u.toarray()
            u = u.astype(cdt) if array_module(u) is np else u.astype(cdt)
            blocks = Us[1:]
            has_unit = (nrm2[rows] > 0).astype(np.float64)
            R = scale[rows, None] * sqc[None, :]
            R[:, 1:] *= has_unit[:, None]
            if normalize:
                blocks = [rescale(B, xp.ones(B.shape[0])) for B in blocks]
            psi, _ = weight(u, blocks, xp.asarray(R), xp.zeros(R.shape[0]), self.wplan, False, backend)
            if normalize:
                psi = rescale(psi, xp.asarray(np.sqrt((R**2).sum(axis=1))))
            F = to_real(psi, self.m, dtype=rdt)
            Z[rows] = F.get() if xp is not np else F
        return Z
