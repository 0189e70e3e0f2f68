r"""KernelSketch: random features Z with Z Zᵀ ≈ the NNGP or NTK of a fully connected network.

Time and memory are linear in the number of points n: every point's features are computed
from its own row (plus O(1) per-point scalars from the exact diagonal recursion), in
chunks of rows.

Layer-wise method (any activation, biases, several layers; docs/math.md §2, §4)
-------------------------------------------------------------------------
Each point carries an NNGP feature ψ (⟨ψ(x), ψ(y)⟩ ≈ K), an NTK feature φ (≈ Θ), both
complex with the Hermitian inner product's real part as the estimate, and its exact
pre-activation variance q_x = K(x, x) from the diagonal recursion.

* input: ψ = x/√d (scipy.sparse input: a CountSketch of x, O(nnz)), φ = ∅ (Θ⁰ = 0)
* Dense(W, b), NTK parameterization: ψ ← [Wψ, b],  φ ← [Wφ, ψ]
  (standard: φ ← [√width·ψ_old, Wφ, 1 if b > 0])
* activation σ at degree L:
  u = ψ/‖ψ‖; U_1 = u exactly, U_2..U_L from one PolySketch of u (so ⟨U_l(x),U_l(y)⟩ ≈ ρ̂^l);
  ψ ← Σ-sketch of ⊕_l r_l(q_x)·U_l            (⟨·,·⟩ ≈ Σ_l r_l(q_x) r_l(q_y) ρ^l = k(q_x, q_y, c))
  δ  = Σ-sketch of ⊕_{l≥1} √l·r_l(q_x)/√q_x·U_{l−1}   (≈ k̇)
  φ ← TensorSRHT(φ, δ)                         (≈ Θ·k̇)
  where the Σ-sketch is a phase-weighted sum of the blocks into m buckets (generated Numba
  kernel, :mod:`codegen.sketch_numba`; CUDA: :mod:`codegen.sketch_cuda`).
* branches (the network's program, :mod:`dualcalc.program`; a register read twice is the
  same feature, so FanOut costs nothing):
  FanInSum / FanInConcat (weights w_i ≥ 0): ψ = ⊕ √w_i ψ_i, φ = ⊕ √w_i φ_i (exact); a
  concatenation longer than 2·internal_dim is re-sketched by an SRHT to 2·internal_dim, so
  deep residual nets keep a bounded width;
  FanInProd: ψ = TensorSRHT(ψ_a, ψ_b),  φ = TensorSRHT(φ_a, ψ_b) ⊕ TensorSRHT'(ψ_a, φ_b)
  (Θ_a K_b + K_a Θ_b; more inputs pairwise from the left);
  LayerNorm: each point's ψ and φ divided by √(q_x + ε), q_x its exact input variance.
* output: a final phase count-sketch into ⌈m/2⌉ complex buckets (a branched network's longer
  output: an SRHT, whose error has no heavy tail from colliding exact coordinates), then real parts and
  imaginary parts (:func:`~dualcalc.sketch.srht.to_real`): exactly ``n_components`` real
  features whose inner product is unbiased for the Hermitian estimate.

Every random map is unbiased given its inputs.  The estimate is consistent but not exactly
unbiased overall, because u is normalised by the *sketched* norm (which keeps |ρ̂| ≤ 1 and
ρ̂ = 1 on the diagonal) and ρ̂^l is a nonlinear function of the previous layer's sketch.
With ``normalize=True`` (default) every sketched vector is also rescaled to the norm its
unsketched value has — known per point from the coefficients — so only correlations are
estimated: lower error, O(1/m) bias; ``normalize=False`` skips that.

Homogeneous method (ReLU family, monomials, …, no biases)
---------------------------------------------------------
See :mod:`dualcalc.sketch.homogeneous`: the whole network is one function of the input
correlation, sketched by a single PolySketch with CountSketch leaves (O(nnz) per leaf).
"""
from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from codegen.cuda_env import gpu_available, require_gpu

from ..bounds import check_allocation
from ..errors import InputError, OutOfMemoryError, ParameterError
from ..network import Network
from ..program import Affine, Normalize, Pointwise, Prod, Sum
from .coefficients import CoefficientTable, choose_degrees, diagonal_recursion, fc_program, sketch_program
from .polysketch import PolySketch
from .srht import SRHT, CountSketch, TensorSRHT, array_module, to_real
from .weighting import rescale as _rescale, row_norms as _row_norms, weight, weight_plan as _weight_plan

__all__ = ["KernelSketch"]

_SUBSAMPLE = 160  # points used to choose the degree automatically
#: A sum's concatenated features longer than this many internal dimensions are re-sketched (SRHT).
CONCAT_LIMIT = 2


def _const_col(n, value, dtype, like):
    xp = array_module(like)
    return xp.full((n, 1), value, dtype=dtype)


def _hstack(parts):
    parts = [p for p in parts if p is not None]
    xp = array_module(parts[0])
    return xp.concatenate(parts, axis=1)


class KernelSketch(TransformerMixin, BaseEstimator):
    """Random features of a network's NNGP or NTK: ``Z = sk.fit_transform(X)``, Z Zᵀ ≈ kernel.

    Parameters
    ----------
    net : Network
        A fully connected network (``dc.serial(dc.Dense(...), act, ...)``): any activation
        (closed form or Hermite), biases, any depth, each layer its own activation; branches
        (FanOut, parallel, FanInSum, FanInConcat, FanInProd, Identity) and LayerNorm with the
        layer-wise method.
    n_components : int
        Number of real output features m.
    kernel : "ntk" or "nngp"
    degree : int, sequence of int, or None
        Truncation degree of the Hermite/Taylor series per activation layer; None chooses it
        on the training data: per layer, the smallest degree whose truncation changes the final
        kernel by at most ``degree_tol``/√(number of activations) (relative Frobenius, measured
        on a subsample against the series at degree 48), default degree_tol = 0.5/√m — half the
        order of the sketch's own error — capped at ``max_degree``.
    random_state : int, RandomState, Generator or None
    method : "auto", "layerwise" or "homogeneous"
        "homogeneous" (the subspace embedding for homogeneous duals, no biases, serial
        networks only) is used by "auto" when the network allows it; "layerwise" works for
        every network.
    internal_dim : int or None
        Complex dimension of the PolySketch nodes and per-layer features (default ⌈m/2⌉, i.e.
        as many real numbers as the output).
    normalize : bool, default True
        Rescale every sketch's output rows to the norm their unsketched value has (known per
        point from the coefficients: the truncated series at ρ = 1), so that only correlations
        are estimated.  This lowers the error by 10–50% in the benchmarks and removes the rare
        large errors of high-degree sketches (heavy-tailed norms); the estimate stays consistent
        but is no longer exactly unbiased (bias O(1/m), far below the noise).  ``False`` keeps
        every random map exactly unbiased given its inputs.
    max_degree, degree_tol : see ``degree``.
    precision : "single" or "double"
        Arithmetic of the sketch itself (complex64 or complex128).  Single precision is about
        twice as fast; its round-off (~1e-7) is far below the sketch's own error (~1/√m).
        The output dtype follows the input (float32 stays float32, float64 stays float64).
    backend : "auto", "numba", "numpy" or "cuda"
        Where the per-layer weighting runs ("auto": cuda when CuPy sees a GPU, else numba).
    chunk_size : int or None
        Rows per chunk (None: from a 256 MB working-set budget).

    Attributes
    ----------
    degrees_ : list of int, the degree of each activation layer.
    degree_errors_ : estimated truncation error per layer (None when ``degree`` was given).
    method_ : the method used.
    n_features_in_ : input dimension d.
    """

    def __init__(self, net=None, n_components=1024, kernel="ntk", degree=None, random_state=None, *,
                 method="auto", internal_dim=None, normalize=True, max_degree=24, degree_tol=None,
                 precision="single", backend="auto", chunk_size=None):
        self.net = net
        self.n_components = n_components
        self.kernel = kernel
        self.degree = degree
        self.random_state = random_state
        self.method = method
        self.internal_dim = internal_dim
        self.normalize = normalize
        self.max_degree = max_degree
        self.degree_tol = degree_tol
        self.precision = precision
        self.backend = backend
        self.chunk_size = chunk_size

    # -- validation ----------------------------------------------------------------------
    def _check_params(self):
        if self.net is None:
            raise ParameterError("KernelSketch needs a network: KernelSketch(dc.serial(...), n_components)")
        if not isinstance(self.net, Network):
            raise ParameterError(f"net must be a dualcalc Network, got {type(self.net).__name__}")
        m = self.n_components
        if not isinstance(m, numbers.Integral) or isinstance(m, bool) or m < 2:
            raise ParameterError(f"n_components must be an integer ≥ 2, got {m!r}")
        if self.kernel not in ("ntk", "nngp"):
            raise ParameterError(f"kernel must be 'ntk' or 'nngp', got {self.kernel!r}")
        if self.method not in ("auto", "layerwise", "homogeneous"):
            raise ParameterError(f"method must be 'auto', 'layerwise' or 'homogeneous', got {self.method!r}")
        if self.internal_dim is not None and (not isinstance(self.internal_dim, numbers.Integral)
                                              or self.internal_dim < 1):
            raise ParameterError(f"internal_dim must be a positive integer or None, got {self.internal_dim!r}")
        if not isinstance(self.max_degree, numbers.Integral) or not 1 <= self.max_degree <= 256:
            raise ParameterError(f"max_degree must be an integer in [1, 256], got {self.max_degree!r}")
        if not isinstance(self.normalize, bool | np.bool_):
            raise ParameterError(f"normalize must be True or False, got {self.normalize!r}")
        if self.precision not in ("single", "double"):
            raise ParameterError(f"precision must be 'single' or 'double', got {self.precision!r}")
        if self.backend not in ("auto", "numba", "numpy", "cuda"):
            raise ParameterError(f"backend must be 'auto', 'numba', 'numpy' or 'cuda', got {self.backend!r}")
        if self.degree_tol is not None and not (isinstance(self.degree_tol, numbers.Real) and self.degree_tol > 0):
            raise ParameterError(f"degree_tol must be a positive number, got {self.degree_tol!r}")
        if self.chunk_size is not None and (not isinstance(self.chunk_size, numbers.Integral) or self.chunk_size < 1):
            raise ParameterError(f"chunk_size must be a positive integer, got {self.chunk_size!r}")

    def _validate(self, X, reset: bool):
        try:
            X = validate_data(self, X, accept_sparse=("csr", "csc", "coo"), dtype=[np.float64, np.float32],
                              reset=reset, ensure_all_finite=True)
        except ValueError as e:
            raise InputError(str(e)) from e
        return X.tocsr() if scipy.sparse.issparse(X) else X

    def _resolve_backend(self):
        if self.backend == "cuda":
            require_gpu("KernelSketch(backend='cuda')")
        if self.backend != "auto":
            return self.backend
        return "cuda" if gpu_available() else "numba"

    # -- fit --------------------------------------------------------------------------------
    def fit(self, X, y=None):
        """Draw the sketches for X's dimension; choose the degrees on X when degree=None."""
        try:
            return self._fit(X)
        except MemoryError as err:  # the random projections of n_components: nothing is half-fitted
            if isinstance(err, OutOfMemoryError):
                raise
            raise OutOfMemoryError(f"KernelSketch(n_components={self.n_components}) needs more memory than is "
                                   f"available to draw its projections ({err}); use fewer n_components") from None

    def _fit(self, X):
        self._check_params()
        self._resolve_backend()  # no GPU for backend="cuda": say so before any work
        from ..conv import is_conv_network  # issue 6: convolutional nets sketch per pixel (conv_sketch.py)

        if is_conv_network(self.net):
            from .conv_sketch import ConvKernelSketch

            self.conv_ = ConvKernelSketch(self.net, self.n_components, self.kernel,
                                          8 if self.degree is None else self.degree, self.random_state,
                                          internal_dim=self.internal_dim, normalize=self.normalize,
                                          precision=self.precision, chunk_size=self.chunk_size).fit(X)
            self.plan_, self.degrees_, self.degree_errors_, self.method_ = self.conv_.plan_, self.conv_.degrees_, None, "conv"
            return self
        X = self._validate(X, reset=True)
        prog = sketch_program(self.net)
        flat = fc_program(prog)  # None: branches or LayerNorm (layer-wise only)
        n, d = X.shape
        rng = check_random_state(self.random_state)
        gen = np.random.default_rng(rng.randint(0, 2**63 - 1, dtype=np.int64))
        m = int(self.n_components)
        mp = int(self.internal_dim) if self.internal_dim is not None else (m + 1) // 2
        acts = prog.act_ops()

        from .homogeneous import HomogeneousPlan, homogeneous_eligible

        method = self.method
        if method == "auto":
            method = "homogeneous" if flat is not None and homogeneous_eligible(flat, self.kernel) else "layerwise"
        elif method == "homogeneous":
            why = ("it has branches or LayerNorm (the embedding composes one function of the input "
                   "correlation along a serial Dense/activation chain); use method='layerwise'") if flat is None \
                else homogeneous_eligible(flat, self.kernel, explain=True)
            if why is not True:
                raise ParameterError(f"method='homogeneous' does not apply to this network: {why}")
        self.method_ = method
        tol = self.degree_tol if self.degree_tol is not None else 0.5 / np.sqrt(m)

        # subsample Gram matrix for the degree choice (sparse: never densified)
        sub = gen.choice(n, min(n, _SUBSAMPLE), replace=False) if n > _SUBSAMPLE else np.arange(n)
        Xs = X[np.sort(sub)]
        K0 = (Xs @ Xs.T)
        K0 = (K0.toarray() if scipy.sparse.issparse(K0) else np.asarray(K0, dtype=np.float64)) / d

        if method == "homogeneous":
            self.plan_ = HomogeneousPlan.draw(flat, d, m, mp, self.kernel, self.degree, self.max_degree, tol,
                                              K0, gen, sparse=scipy.sparse.issparse(X))
            self.degrees_ = [self.plan_.degree]
            self.degree_errors_ = [self.plan_.fit_error]
            return self

        # degrees
        if self.degree is None:
            degrees, errs = choose_degrees(prog, K0, d, self.kernel, tol, int(self.max_degree))
        else:
            degrees = list(self.degree) if np.ndim(self.degree) else [self.degree] * len(acts)
            if len(degrees) != len(acts) or not all(isinstance(L, numbers.Integral) and L >= 1 for L in degrees):
                raise ParameterError(f"degree must be a positive integer or one per activation layer "
                                     f"({len(acts)}), got {self.degree!r}")
            degrees = [int(L) for L in degrees]
            errs = None
        self.degrees_ = degrees
        self.degree_errors_ = errs

        self.plan_ = self._draw(prog, d, m, mp, degrees, gen, scipy.sparse.issparse(X))
        self._tables_ = None
        return self

    def _draw(self, prog, d, m, mp, degrees, gen, sparse) -> list:
        """The random maps, following each register's feature dimensions (dψ, dφ; dφ None
        where Θ = 0) through the program: stage r for operation r, then the output stage.
        The draws of a serial network come in its layers' order (the same features as before
        the program existed, for the same random_state)."""
        ntk = self.kernel == "ntk"
        ops = prog.ops
        stages: list = [None] * len(ops)
        dpsi: list = [None] * len(ops)
        dphi: list = [None] * len(ops)
        if sparse:
            stages[0] = {"kind": "input", "cs": CountSketch(d, mp, gen)}
            dpsi[0] = mp
        else:
            stages[0] = {"kind": "input", "cs": None}
            dpsi[0] = d
        k_out = (m + 1) // 2
        cap = int(CONCAT_LIMIT * mp)
        a = 0
        for r in range(1, len(ops)):
            op = ops[r]
            src = op.srcs[0]
            if isinstance(op, Affine):
                dp = dpsi[src] + (1 if op.b2 > 0 else 0)
                if not op.standard:
                    dphi[r] = dp if dphi[src] is None else dphi[src] + dp
                else:
                    dphi[r] = dpsi[src] + (dphi[src] or 0) + (1 if op.bias else 0)
                dpsi[r] = dp
                stages[r] = {"kind": "dense", "op": op}
            elif isinstance(op, Pointwise):
                L = degrees[a]
                out = k_out if r == prog.output == len(ops) - 1 else mp
                deriv = ntk and op.act.dual.ntk_convention != "zero-a.e."
                du = dpsi[src]
                # reserve collision-free buckets for the exact terms (constant and u) when they
                # are few; the PolySketch blocks fill the others
                ms = out - (du + 1) if 2 * (du + 1) <= out else out
                st = {"kind": "act", "index": a, "degree": L, "out": out,
                      "poly": PolySketch(du, L, ms, gen) if L >= 2 else None,
                      "plan": _weight_plan(gen, du, L, out, ms),
                      "deriv": deriv,
                      "tensor": TensorSRHT(dphi[src], out, out, gen) if (deriv and dphi[src] is not None) else None}
                stages[r] = st
                dpsi[r] = out
                dphi[r] = out if st["tensor"] is not None else None
                a += 1
            elif isinstance(op, Normalize):
                stages[r] = {"kind": "norm", "op": op}
                dpsi[r], dphi[r] = dpsi[src], dphi[src]
            elif isinstance(op, Sum):
                # ⊕ √w_i ψ_i: exact; re-sketched (SRHT) only when longer than the cap
                dp = sum(dpsi[s] for s in op.srcs)
                fs = [dphi[s] for s in op.srcs if dphi[s] is not None] if ntk else []
                df = sum(fs) if fs else None
                many = len(op.srcs) > 1  # one branch is no concatenation: passed as it is
                st = {"kind": "sum", "op": op, "psi": SRHT(dp, cap, gen) if many and dp > cap else None,
                      "phi": SRHT(df, cap, gen) if many and len(fs) > 1 and df > cap else None}
                stages[r] = st
                dpsi[r] = cap if st["psi"] is not None else dp
                dphi[r] = (cap if st["phi"] is not None else df) if fs else None
            elif isinstance(op, Prod):
                # pairwise from the left: K ← K·K_i (one TensorSRHT), Θ ← Θ·K_i ⊕ K·Θ_i (two)
                pairs = []
                dp, df = dpsi[src], dphi[src] if ntk else None
                for s in op.srcs[1:]:
                    dfi = dphi[s] if ntk else None
                    t_k = TensorSRHT(dp, dpsi[s], mp, gen)
                    t_a = TensorSRHT(df, dpsi[s], mp, gen) if df is not None else None
                    t_b = TensorSRHT(dp, dfi, mp, gen) if dfi is not None else None
                    pairs.append((t_k, t_a, t_b))
                    nterm = (t_a is not None) + (t_b is not None)
                    dp, df = mp, (nterm * mp if nterm else None)
                stages[r] = {"kind": "prod", "op": op, "pairs": pairs}
                dpsi[r], dphi[r] = dp, df
            else:  # pragma: no cover - sketch_program refuses it
                raise ParameterError(f"KernelSketch cannot sketch {op!r}")
        out = prog.output
        final_dim = dphi[out] if ntk else dpsi[out]
        direct = isinstance(ops[out], Pointwise) and out == len(ops) - 1 and final_dim == k_out
        if direct or final_dim is None:
            cs = None
        elif prog.serial or final_dim <= k_out:
            cs = CountSketch(final_dim, k_out, gen)  # collision-free when final_dim ≤ k_out
        else:
            # a branched net's output holds exact blocks (an Identity shortcut's input, several
            # biases) of a few large coordinates; a CountSketch collision between two of them
            # is a rare large error, an SRHT spreads every coordinate over all buckets
            cs = SRHT(final_dim, k_out, gen)
        stages.append({"kind": "output", "cs": cs, "k": k_out})
        return stages

    # -- transform ------------------------------------------------------------------------------
    def transform(self, X):
        """Features (n, n_components) of X (dense or scipy.sparse), float32 for float32 input."""
        if hasattr(X, "__dask_graph__"):  # Dask: this fitted sketch on every block, lazily (docs/dask.md)
            from ..distributed import sketch_transform

            return sketch_transform(self, X)
        check_is_fitted(self, "plan_")
        if getattr(self, "method_", None) == "conv":  # issue 6: per-pixel CNTK sketch (conv_sketch.py)
            return self.conv_.transform(X)
        X = self._validate(X, reset=False)
        out_dtype = np.float32 if X.dtype == np.float32 else np.float64
        check_allocation(X.shape[0] * float(self.n_components) * np.dtype(out_dtype).itemsize,
                         f"the features ({X.shape[0]} × {self.n_components} {np.dtype(out_dtype).name})",
                         hint="transform the rows in batches, or give a Dask array")
        if self.method_ == "homogeneous":
            return self.plan_.transform(X, out_dtype, self._chunk(X), self.normalize, self._resolve_backend(),
                                        self._complex_dtype(out_dtype))
        return self._transform_layerwise(X, out_dtype)

    def _complex_dtype(self, out_dtype):
        if self.precision == "double" and out_dtype == np.float64:
            return np.dtype(np.complex128)
        return np.dtype(np.complex64)

    def _chunk(self, X) -> int:
        if self.chunk_size is not None:
            return int(self.chunk_size)
        m = int(self.n_components)
        L = max(getattr(self, "degrees_", [8]) or [8])
        d = X.shape[1] if not scipy.sparse.issparse(X) else 0
        per_row = 16 * (m * (2 * L + 10) + 4 * d)
        return int(np.clip(256 * 2**20 // per_row, 8, 8192))

    def _coefficients(self, prog, X):
        """Exact per-point variances: before every activation (with its coefficient table) and
        q + ε before every LayerNorm."""
        d = X.shape[1]
        if scipy.sparse.issparse(X):
            q0 = np.asarray(X.multiply(X).sum(axis=1)).ravel() / d
        else:
            X64 = X.astype(np.float64, copy=False)
            q0 = np.einsum("ij,ij->i", X64, X64) / d
        acts = prog.act_ops()
        tables = [CoefficientTable(op.act, L) for op, L in zip(acts, self.degrees_)]
        Rs = []

        def moment(a):
            def f(q):
                R, M = tables[a](q)
                Rs.append(R)
                return M
            return f

        diag = diagonal_recursion(prog, q0, d, [moment(a) for a in range(len(acts))])
        return q0, diag["pre"], Rs, diag["norm"]

    def _transform_layerwise(self, X, out_dtype):
        prog = sketch_program(self.net)
        n, d = X.shape
        backend = self._resolve_backend()
        cdt = self._complex_dtype(out_dtype)
        rdt = np.float32 if cdt == np.complex64 else np.float64
        _, pre, Rs, norm = self._coefficients(prog, X)
        inv_sq = []
        for q in pre:
            with np.errstate(divide="ignore"):
                inv_sq.append(np.where(q > 0, 1.0 / np.sqrt(np.where(q > 0, q, 1.0)), 0.0))
        inv_norm = [1.0 / np.sqrt(e) for e in norm]
        m = int(self.n_components)
        Z = np.empty((n, m), dtype=out_dtype)
        step = self._chunk(X)
        xp = np
        if backend == "cuda":  # pragma: no cover - GPU
            import cupy as xp
        for s0 in range(0, n, step):
            rows = slice(s0, min(n, s0 + step))
            F = self._chunk_layerwise(X[rows], prog, d, [R[rows] for R in Rs], [v[rows] for v in inv_sq],
                                      [v[rows] for v in inv_norm], cdt, rdt, backend, xp)
            Z[rows] = F.get() if xp is not np else F
        return Z

    def _chunk_layerwise(self, Xc, prog, d, Rs, inv_sq, inv_norm, cdt, rdt, backend, xp):
        """The features of one chunk of rows: each register's (ψ, ‖ψ‖, φ, ‖φ‖) in program
        order, ‖·‖ the exact norms of the unsketched features (for ``normalize``), φ None
        where Θ = 0; a register is dropped after its last reader."""
        stages = self.plan_
        nc = Xc.shape[0]
        ntk = self.kernel == "ntk"
        inp = stages[0]
        if inp["cs"] is not None:  # sparse input: O(nnz) CountSketch
            psi = inp["cs"](Xc, cdt) / np.sqrt(d)
        else:
            psi = np.asarray(Xc, dtype=rdt) / rdt(np.sqrt(d))
        if xp is not np:  # pragma: no cover - GPU
            psi = xp.asarray(psi)
        psi = psi.astype(cdt)
        regs: list = [None] * len(prog.ops)
        regs[0] = (psi, _row_norms(psi), None, None)  # exact norms of the unsketched features
        b = 0
        for r in range(1, len(prog.ops)):
            st, op = stages[r], prog.ops[r]
            ins = [regs[s] for s in op.srcs]
            kind = st["kind"]
            if kind == "dense":
                regs[r] = self._dense(op, *ins[0], nc, d, cdt, xp)
            elif kind == "act":
                a = st["index"]
                regs[r] = self._activation(st, *ins[0], xp.asarray(Rs[a]), xp.asarray(inv_sq[a]), cdt, rdt,
                                           backend, xp)
            elif kind == "norm":
                f = xp.asarray(inv_norm[b])
                b += 1
                psi, pn, phi, fn = ins[0]
                fc = f[:, None].astype(rdt)
                regs[r] = (psi * fc, pn * f, None if phi is None else phi * fc, None if phi is None else fn * f)
            elif kind == "sum":
                regs[r] = self._sum(st, ins, xp)
            else:
                regs[r] = self._prod(st, ins, cdt, xp)
            if not ntk:  # the NNGP features never read φ
                regs[r] = regs[r][:2] + (None, None)
            for s in op.srcs:
                if prog.last_use[s] == r:
                    regs[s] = None
        psi, psi_norm, phi, phi_norm = regs[prog.output]
        out = stages[-1]
        F, Fn = (phi, phi_norm) if ntk else (psi, psi_norm)
        m = int(self.n_components)
        if F is None:  # the NTK is identically zero (σ' = 0 a.e., or no Dense layer)
            return xp.zeros((nc, m), dtype=rdt)
        if out["cs"] is not None:
            F = out["cs"](F, cdt)
            if self.normalize:
                F = _rescale(F, Fn)
        return to_real(F, m, dtype=rdt)

    @staticmethod
    def _dense(op, psi, psi_norm, phi, phi_norm, nc, d, cdt, xp):
        """Dense(W, b): ψ ← [Wψ, b], φ ← [Wφ, ψ] (standard: [√width·ψ_old, Wφ, 1 with a bias])."""
        w2, b2 = op.w2, op.b2
        W = np.sqrt(w2)
        psi_old, psi_old_norm = psi, psi_norm
        psi = psi * cdt.type(W)
        psi_norm = W * psi_norm
        if b2 > 0:
            psi = _hstack([psi, _const_col(nc, np.sqrt(b2), cdt, psi)])
            psi_norm = xp.sqrt(psi_norm**2 + b2)
        if not op.standard:
            if phi is None:
                phi, phi_norm = psi.copy(), psi_norm.copy()
            else:
                phi = _hstack([phi * cdt.type(W), psi])
                phi_norm = xp.sqrt(w2 * phi_norm**2 + psi_norm**2)
        else:
            width = d if op.width is None else op.width
            parts = [psi_old * cdt.type(np.sqrt(width))]
            nrm2 = width * psi_old_norm**2
            if phi is not None:
                parts.append(phi * cdt.type(W))
                nrm2 = nrm2 + w2 * phi_norm**2
            if op.bias:  # a trainable bias adds 1 to Θ (whatever b_std)
                parts.append(_const_col(nc, 1.0, cdt, psi))
                nrm2 = nrm2 + 1.0
            phi, phi_norm = _hstack(parts), xp.sqrt(nrm2)
        return psi, psi_norm, phi, phi_norm

    def _activation(self, st, psi, psi_norm, phi, phi_norm, R, s, cdt, rdt, backend, xp):
        """One activation layer (see the module docstring)."""
        normalize = self.normalize
        nc = psi.shape[0]
        L = st["degree"]
        nrm = _row_norms(psi)
        u = psi * xp.where(nrm > 0, 1.0 / xp.where(nrm > 0, nrm, 1.0), 0.0)[:, None].astype(rdt)
        blocks = []
        if st["poly"] is not None:
            blocks = st["poly"].transform(u, cdt)[1:]
            if normalize:
                blocks = [_rescale(B, xp.ones(nc)) for B in blocks]
        has_unit = (nrm > 0).astype(rdt)
        psi, delta = self._weight(u, blocks, R, s, st["plan"], st["deriv"], backend)
        # norms of the unsketched layer outputs (U_l of a unit vector have norm 1)
        psi_norm = xp.sqrt(R[:, 0] ** 2 + (R[:, 1:] ** 2).sum(axis=1) * has_unit)
        if normalize:
            psi = _rescale(psi, psi_norm)
        if st["tensor"] is not None:
            ell = xp.arange(1, L + 1, dtype=rdt)
            dnorm = xp.sqrt((ell * R[:, 1:] ** 2 * has_unit[:, None]).sum(axis=1) + R[:, 1] ** 2 * (1 - has_unit)) * s
            phi = st["tensor"](phi, delta, cdt)
            phi_norm = phi_norm * dnorm
            if normalize:
                phi = _rescale(phi, phi_norm)
        else:
            phi, phi_norm = None, None
        return psi, psi_norm, phi, phi_norm

    def _sum(self, st, ins, xp):
        """FanInSum/FanInConcat: ψ = ⊕ √w_i ψ_i (φ likewise over the branches with Θ ≠ 0)."""
        w = getattr(st["op"], "weights", None)
        sw = [1.0] * len(ins) if w is None else [float(np.sqrt(v)) for v in w]
        out = []
        for j, key in ((0, "psi"), (2, "phi")):
            parts = [(x[j] if c == 1.0 else x[j] * x[j].real.dtype.type(c), c, x[j + 1])
                     for x, c in zip(ins, sw) if x[j] is not None]
            if not parts:
                out += [None, None]
                continue
            F = _hstack([p for p, _, _ in parts])
            if len(parts) == 1:  # one branch: its norm as it is (a serial net's features, bit for bit)
                Fn = parts[0][2] if parts[0][1] == 1.0 else parts[0][1] * parts[0][2]
            else:
                Fn = xp.sqrt(sum(c * c * n**2 for _, c, n in parts))
            if st[key] is not None:  # longer than the cap: one SRHT (unbiased), rows to their exact norm
                F = st[key](F, F.dtype)
                if self.normalize:
                    F = _rescale(F, Fn)
            out += [F, Fn]
        return tuple(out)

    def _prod(self, st, ins, cdt, xp):
        """FanInProd: K·K_i by a TensorSRHT of (ψ, ψ_i); Θ·K_i ⊕ K·Θ_i by two more."""
        normalize = self.normalize
        psi, pn, phi, fn = ins[0]
        for (t_k, t_a, t_b), (psi_i, pn_i, phi_i, fn_i) in zip(st["pairs"], ins[1:], strict=True):
            terms = []
            if t_a is not None:
                terms.append((t_a(phi, psi_i, cdt), fn * pn_i))
            if t_b is not None:
                terms.append((t_b(psi, phi_i, cdt), pn * fn_i))
            psi, pn = t_k(psi, psi_i, cdt), pn * pn_i
            if normalize:
                psi = _rescale(psi, pn)
                for T, tn in terms:
                    _rescale(T, tn)
            if terms:
                phi = _hstack([T for T, _ in terms])
                fn = terms[0][1] ** 2
                for _, tn in terms[1:]:
                    fn = fn + tn**2
                fn = xp.sqrt(fn)
            else:
                phi, fn = None, None
        return psi, pn, phi, fn

    _weight = staticmethod(weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
