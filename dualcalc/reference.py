r"""The NumPy reference: a network's program run on whole matrices, and the per-point plan.

Every backend shares :func:`recursion_plan`: the program (:mod:`dualcalc.program`) run on
the points' own diagonal (q_x = K(x, x), t_x = Θ(x, x)), O(n·depth), giving the variances
each activation and LayerNorm needs and the Hermite coefficient tables r_l(q_i);
:func:`numpy_kernel` runs the program on (n1, n2) matrices (the generated Numba and CUDA
kernels run it per entry in registers, :mod:`dualcalc.backends`).  For K(X, X) the diagonal
entries enter each activation with c = q exactly (ρ = 1), as in neural-tangents: computing
the angle from a round-off ρ = 1 − 1e−16 would cost ~1e−8 on the NTK diagonal of ReLU
networks.  Functions taking ``net`` accept a network (anything with ``.program()``) or a
:class:`~dualcalc.program.Program`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import hermite as H
from .activation import Activation
from .dual import HERMITE
from .errors import DivergentError, InputError, ParameterError
from .program import Affine, Normalize, Pointwise, Program, Prod, Sum


class Kernel(NamedTuple):
    """NNGP and NTK matrices of shape (n1, n2); an entry is None when not requested."""

    nngp: np.ndarray | None
    ntk: np.ndarray | None


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
        try:
            A = np.asarray(A)
        except (ValueError, TypeError) as err:  # ragged lists
            raise InputError(f"{name} is not a rectangular array of numbers ({err})") from None
        if A.dtype.kind not in "fiu":
            raise InputError(f"{name} must hold real numbers, got dtype {A.dtype}"
                             + (" (complex data is not supported)" if A.dtype.kind == "c" else ""))
        if A.dtype.kind in "iu":
            A = A.astype(np.float64)  # documented conversion: integers become float64
        if A.ndim != 2:
            hint = (f"; a single point is {name}.reshape(1, -1), a single feature {name}.reshape(-1, 1)"
                    if A.ndim == 1 else "")
            raise InputError(f"{name} must be 2-D (n_samples, n_features), got shape {A.shape}{hint}")
        if A.shape[0] == 0 or A.shape[1] == 0:
            raise InputError(f"{name} is empty (shape {A.shape})")
        if not np.all(np.isfinite(A)):
            bad = np.argwhere(~np.isfinite(A))[0]
            raise InputError(f"{name} contains NaN or Inf (first at row {bad[0]}, column {bad[1]})")
        with np.errstate(over="ignore"):  # values beyond float32 become inf: refused just below
            out = np.ascontiguousarray(A, dtype=dtype)
        if out.dtype != A.dtype and not np.all(np.isfinite(out)):  # beyond float32's range
            raise InputError(f"{name} has values beyond the range of {dtype} (largest |value| "
                             f"{float(np.max(np.abs(A))):.3g})")
        return out

    X = one(X, "X")
    Y = one(Y, "Y")
    if Y is not None and Y.shape[1] != X.shape[1]:
        raise InputError(f"X has {X.shape[1]} features but Y has {Y.shape[1]}")
    return X, Y


@dataclass
class ActivationStep:
    """What the pair recursion needs at one activation layer.

    ``qx``/``qy``: the points' own input variances at this layer (float64, (n1,), (n2,));
    ``Rx``/``Ry``: Hermite-method coefficient tables r_l(q) (shape (n, degree+1)), None
    for closed forms.  For K(X, X), ``qy is qx`` and ``Ry is Rx``.
    """

    act: Activation
    qx: np.ndarray
    qy: np.ndarray
    Rx: np.ndarray | None = None
    Ry: np.ndarray | None = None
    #: The tables hold σ'(0) as r_1 at the zero-variance points (see RecursionPlan.inverse_roots).
    zero_slope: bool = False

    #: the operation (its ``src`` register) this step belongs to
    op: Pointwise | None = None

    @property
    def hermite(self) -> bool:
        return self.Rx is not None

    @property
    def zero_ntk(self) -> bool:
        return self.act.dual.ntk_convention == "zero-a.e." and (self.hermite or self.act.dual.ntk_rho is None)


@dataclass
class NormStep:
    """A LayerNorm's per-point divisors: ``qx``/``qy`` hold q + ε of its input (so the plan's
    inverse roots are the factors 1/√(q + ε))."""

    qx: np.ndarray
    qy: np.ndarray
    op: Normalize | None = None
    Rx = Ry = None
    zero_slope = False
    hermite = False


@dataclass
class RecursionPlan:
    """Per-point quantities of every layer, O(n·depth) (O(n·degree) for Hermite tables);
    ``steps[slot]`` for each slot of the program (activations and LayerNorms)."""

    steps: list[ActivationStep | NormStep]
    qx_out: np.ndarray  # K(x, x) after the last layer
    qy_out: np.ndarray
    tx_out: np.ndarray | None  # Θ(x, x) after the last layer
    ty_out: np.ndarray | None
    d: int
    symmetric: bool

    def inverse_roots(self) -> tuple[np.ndarray, np.ndarray]:
        """1/√q of every point at every activation: shapes (n_act, n1), (n_act, n2) (zeros of
        shape (1, n) without activations), 0 where q = 0 — except at a Hermite layer with
        ``zero_slope``, where it is 1 there.  A zero variance makes u ≡ 0, so k̇ = σ'(0)·E[σ'(v)]
        = σ'(0)·r_1(q_v)/√q_v (Stein); the Mehler form Σ_l l r_l(q_u) r_l(q_v) ρ^{l−1}/√(q_u q_v)
        is 0/0 there.  With r_1(0) := σ'(0) in the table and 1/√q_u := 1 (ρ = 0 exactly there),
        the same series gives it, and k is unchanged (its l ≥ 1 terms carry ρ^l = 0)."""
        if not self.steps:
            z1 = np.zeros((1, self.qx_out.size))
            return z1, (z1 if self.symmetric else np.zeros((1, self.qy_out.size)))

        def inv(q: np.ndarray, step: ActivationStep) -> np.ndarray:
            with np.errstate(divide="ignore"):
                r = np.where(q > 0, 1.0 / np.sqrt(q), 0.0)
            if step.zero_slope:
                r[q == 0] = 1.0
            return r

        I1 = np.stack([inv(s.qx, s) for s in self.steps])
        return I1, (I1 if self.symmetric else np.stack([inv(s.qy, s) for s in self.steps]))


#: Unique variances up to which Hermite tables are computed point by point.
EXACT_TABLE_LIMIT = 64


def hermite_tables(act: Activation, q: np.ndarray, *, rtol: float = 1e-13) -> np.ndarray:
    """r_l(q_i) for every point: table of shape (len(q), degree+1).

    The degree is chosen by the activation's series (its tolerance) over the range of
    q.  Up to :data:`EXACT_TABLE_LIMIT` distinct variances are computed directly by
    quadrature; beyond, r_l(q) — analytic in s = √q — is interpolated (barycentric,
    Chebyshev points in s) from exact tables at m + 1 points, m doubling from 32 until
    exact tables at the m midpoints agree to ``rtol`` relative to √E[σ_q²]; if that
    never happens (m = 512), everything is computed directly, in chunks.
    """
    series = act.dual.series
    q = np.asarray(q, dtype=np.float64)
    uq, inv = np.unique(q, return_inverse=True)
    if uq.size <= EXACT_TABLE_LIMIT:
        R, _ = series.table(uq)
        return R[inv]
    smin, smax = float(np.sqrt(uq[0])), float(np.sqrt(uq[-1]))
    m = 32
    while m <= 512:
        k = np.arange(m + 1)
        nodes = 0.5 * (smin + smax) - 0.5 * (smax - smin) * np.cos(np.pi * k / m)  # 2nd kind, ends included
        nodes[0], nodes[-1] = smin, smax
        Rn, _ = series.table(nodes**2)
        deg = Rn.shape[1] - 1
        mid = 0.5 * (smin + smax) - 0.5 * (smax - smin) * np.cos(np.pi * (k[:-1] + 0.5) / m)
        Rm, _ = series.table(mid**2, degree=deg)
        approx = H.barycentric(nodes, Rn, mid)
        scale = np.sqrt(np.maximum(np.sum(Rm**2, axis=1), 1e-300))[:, None]
        if np.max(np.abs(approx - Rm) / scale) <= rtol:
            out = np.empty((uq.size, deg + 1))
            for a in range(0, uq.size, 4096):
                out[a:a + 4096] = H.barycentric(nodes, Rn, np.sqrt(uq[a:a + 4096]))
            return out[inv]
        m *= 2
    R0, _ = series.table(uq[[0, -1]])  # degree from the extremes
    deg = R0.shape[1] - 1
    out = np.empty((uq.size, deg + 1))
    for a in range(0, uq.size, 256):
        out[a:a + 256] = series.table(uq[a:a + 256], degree=deg)[0]
    return out[inv]


def _affine(op: Affine, d: int, K, T):
    """One Dense layer on (K, Θ) (arrays or per-point vectors); T None: no NTK."""
    Kn = op.w2 * K + op.b2
    if T is None:
        return Kn, None
    if not op.standard:
        return Kn, op.w2 * T + Kn
    width = d if op.width is None else op.width
    return Kn, width * K + op.w2 * T + (1.0 if op.bias else 0.0)


def _sum(Ks, weights=None):
    """Σ w_i K_i (weights None: all 1)."""
    if weights is not None:
        Ks = [w * K for w, K in zip(weights, Ks, strict=True)]
    out = Ks[0]
    for K in Ks[1:]:
        out = out + K
    return out


def _prod(Ks, Ts):
    """Π K_i and Σ_i Θ_i Π_{j≠i} K_j (Ts None: no NTK)."""
    K, T = Ks[0], (None if Ts is None else Ts[0])
    for i in range(1, len(Ks)):
        if Ts is not None:
            T = T * Ks[i] + K * Ts[i]
        K = K * Ks[i]
    return K, T


def recursion_plan(net, X: np.ndarray, Y: np.ndarray | None, *, ntk_diag: bool = True) -> RecursionPlan:
    """Per-point variances at every activation and LayerNorm (and Hermite tables), from the
    inputs' norms: the network's program run on the diagonal.

    Raises :class:`~dualcalc.errors.InputError` when a variance overflows (the kernel would
    be Inf/NaN) and :class:`~dualcalc.errors.DivergentError` when it leaves the domain
    where the activation's Gaussian expectation exists.
    """
    prog = _program(net)
    with np.errstate(over="ignore", invalid="ignore"):  # every layer's variances are checked for inf/NaN below
        return _recursion_plan(prog, X, Y, ntk_diag)


def _recursion_plan(prog: Program, X: np.ndarray, Y: np.ndarray | None, ntk_diag: bool) -> RecursionPlan:
    d = X.shape[1]
    sym = Y is None
    qx = np.einsum("ij,ij->i", X, X, dtype=np.float64) / d
    qy = qx if sym else np.einsum("ij,ij->i", Y, Y, dtype=np.float64) / d
    for q, name in ((qx, "X"), (qy, "Y")):
        if not np.all(np.isfinite(q)):
            raise InputError(f"the squared norms of the rows of {name} overflow float64 "
                             f"(row {int(np.flatnonzero(~np.isfinite(q))[0])}); rescale the data")
    tx = np.zeros_like(qx) if ntk_diag else None
    ty = (tx if sym else np.zeros_like(qy)) if ntk_diag else None
    regs: list = [None] * len(prog.ops)  # (qx, qy, tx, ty) per register, dropped after its last use
    regs[0] = (qx, qy, tx, ty)
    steps: list = [None] * prog.n_act
    for li, op in enumerate(prog.ops):
        if li == 0:
            continue
        ins = [regs[s] for s in op.srcs]
        if isinstance(op, Affine):
            qx, tx = _affine(op, d, ins[0][0], ins[0][2])
            qy, ty = (qx, tx) if sym else _affine(op, d, ins[0][1], ins[0][3])
        elif isinstance(op, Pointwise):
            step, (qx, qy, tx, ty) = _activation_step(op, *ins[0], sym, ntk_diag, li)
            steps[op.slot] = step
        elif isinstance(op, Normalize):
            steps[op.slot] = step = _norm_step(op, ins[0], sym, li)
            qx, tx = ins[0][0] / step.qx, (None if not ntk_diag else ins[0][2] / step.qx)
            qy, ty = (qx, tx) if sym else (ins[0][1] / step.qy, None if not ntk_diag else ins[0][3] / step.qy)
        elif isinstance(op, Sum):
            w = op.weights
            qx, qy = _sum([r[0] for r in ins], w), (None if sym else _sum([r[1] for r in ins], w))
            tx, ty = (_sum([r[2] for r in ins], w), None if sym else _sum([r[3] for r in ins], w)) if ntk_diag \
                else (None, None)
            qy, ty = (qx, tx) if sym else (qy, ty)
        elif isinstance(op, Prod):
            qx, tx = _prod([r[0] for r in ins], [r[2] for r in ins] if ntk_diag else None)
            qy, ty = (qx, tx) if sym else _prod([r[1] for r in ins], [r[3] for r in ins] if ntk_diag else None)
        else:
            raise ParameterError(f"fully connected kernels cannot run {op!r}")
        for q, name in ((qx, "X"), (qy, "Y")):
            if not np.all(np.isfinite(q)):
                bad = int(np.flatnonzero(~np.isfinite(q))[0])
                raise InputError(f"layer {li} ({op.label}): the variance of row {bad} of {name} is not "
                                 "finite (it overflows at this input scale); rescale the data or the weights")
        regs[li] = (qx, qy, tx, ty)
        for s in op.srcs:
            if prog.last_use[s] == li:
                regs[s] = None
    qx, qy, tx, ty = regs[prog.output]
    if ntk_diag:
        for t, name in ((tx, "X"), (ty, "Y")):
            if not np.all(np.isfinite(t)):
                raise InputError(f"the NTK diagonal of {name} is not finite (row "
                                 f"{int(np.flatnonzero(~np.isfinite(t))[0])}); rescale the data or the weights")
    return RecursionPlan(steps, qx, qy, tx, ty, d, sym)


def _norm_step(op: Normalize, reg, sym: bool, li: int) -> NormStep:
    ex, ey = reg[0] + op.eps, (None if sym else reg[1] + op.eps)
    for e, name in ((ex, "X"), (ey, "Y")):
        if e is not None and not np.all(e > 0):
            raise InputError(f"layer {li} ({op.label}): row {int(np.flatnonzero(~(e > 0))[0])} of {name} has "
                             "zero variance there, which LayerNorm with eps=0 cannot normalise")
    return NormStep(ex, ex if sym else ey, op)


def _activation_step(op: Pointwise, qx, qy, tx, ty, sym: bool, ntk_diag: bool, li: int):
    """The plan's step of an activation, and the points' (q, t) after it."""
    layer = op.act
    _check_domain(layer, qx, qy, li)
    if op.method == HERMITE:
        qall = qx if sym else np.concatenate([qx, qy])
        R = hermite_tables(layer, qall)
        Rx, Ry = (R, R) if sym else (R[: qx.size], R[qx.size:])
        step = ActivationStep(layer, qx, qy, Rx, Ry, op=op)
        ones = np.ones(qx.size)
        qx_new = H.series_nngp(Rx, Rx, ones)
        dx = H.series_ntk(Rx, Rx, ones, qx) if ntk_diag else None
        if sym:
            qy_new, dy = qx_new, dx
        else:
            onesy = np.ones(qy.size)
            qy_new = H.series_nngp(Ry, Ry, onesy)
            dy = H.series_ntk(Ry, Ry, onesy, qy) if ntk_diag else None
        step.zero_slope = _carry_zero_slope(step, R, qall)
        if step.zero_slope and ntk_diag:  # k̇(0, 0, 0) = σ'(0)²
            d0 = R[np.flatnonzero(qall == 0)[0], 1]
            dx = np.where(qx == 0, d0 * d0, dx)
            dy = dx if sym else np.where(qy == 0, d0 * d0, dy)
    else:
        step = ActivationStep(layer, qx, qy, op=op)
        qx_new = layer.nngp(qx, qx, qx)
        dx = _ntk_values(step, qx, qx, qx) if ntk_diag else None
        if sym:
            qy_new, dy = qx_new, dx
        else:
            qy_new = layer.nngp(qy, qy, qy)
            dy = _ntk_values(step, qy, qy, qy) if ntk_diag else None
    if ntk_diag:
        if step.zero_ntk:
            tx = np.zeros_like(tx)
            ty = tx if sym else np.zeros_like(ty)
        else:
            tx = tx * dx
            ty = tx if sym else ty * dy
    return step, (qx_new, qy_new, tx, ty)


def _carry_zero_slope(step: ActivationStep, R: np.ndarray, q: np.ndarray) -> bool:
    """Put σ'(0) into r_1 of the table rows R[q == 0] (in place; see
    :meth:`RecursionPlan.inverse_roots`); False where nothing is to carry (no zero variance,
    degree 0, σ' a delta, or σ'(0) unknown)."""
    zero = q == 0
    if not zero.any() or R.shape[1] < 2 or step.zero_ntk:
        return False
    d0 = step.act.dual.series.derivative_at_zero()
    if not np.isfinite(d0):
        return False
    R[zero, 1] = d0
    return True


def _check_domain(act: Activation, qx, qy, li: int) -> None:
    qmax = getattr(act.dual, "q_max", None)
    if qmax is None:
        return
    top = max(float(np.max(qx)), float(np.max(qy)))
    if top >= qmax:
        raise DivergentError(f"layer {li} ({act.label}): input variance {top:.4g} is at or beyond {qmax:.4g}, "
                             "where E[σ(u)²] stops existing; reduce W_std/b_std or rescale the data")


def _ntk_values(step: ActivationStep, q1_, q2_, c_) -> np.ndarray:
    """k̇ of a closed-form step (0 where σ' is a delta and no a.e. derivative dual is given)."""
    if step.zero_ntk:
        return np.zeros(np.broadcast(q1_, q2_, c_).shape)
    dual = step.act.dual
    if dual.ntk_convention == "zero-a.e.":  # an a.e.-derivative dual is given: evaluate it quietly
        return dual.evaluate("ntk", q1_, q2_, c_)
    return step.act.ntk(q1_, q2_, c_)


def numpy_kernel(net, X: np.ndarray, Y: np.ndarray | None, get=("nngp", "ntk")) -> Kernel:
    """Reference backend: the network's program run with whole-matrix NumPy operations (float64).

    Memory O(n1·n2) per live register (several): meant for checking the generated backends.
    """
    X64 = X.astype(np.float64)
    Y64 = None if Y is None else Y.astype(np.float64)
    want_ntk = "ntk" in get
    prog = _program(net)
    plan = recursion_plan(prog, X64, Y64, ntk_diag=False)
    d = X64.shape[1]
    K = X64 @ (X64 if Y64 is None else Y64).T / d
    regs: list = [None] * len(prog.ops)
    regs[0] = (K, np.zeros_like(K) if want_ntk else None)
    I1, I2 = plan.inverse_roots()
    diag = np.arange(K.shape[0]) if plan.symmetric else None
    for li, op in enumerate(prog.ops):
        if li == 0:
            continue
        ins = [regs[s] for s in op.srcs]
        K, T = ins[0]
        if isinstance(op, Affine):
            K, T = _affine(op, d, K, T)
        elif isinstance(op, Normalize):
            f = I1[op.slot][:, None] * I2[op.slot][None, :]
            K, T = K * f, (None if T is None else T * f)
        elif isinstance(op, Sum):
            K, T = _sum([r[0] for r in ins], op.weights), (None if T is None else _sum([r[1] for r in ins], op.weights))
        elif isinstance(op, Prod):
            K, T = _prod([r[0] for r in ins], [r[1] for r in ins] if want_ntk else None)
        else:
            K, T = _numpy_activation(plan.steps[op.slot], K, T, I1[op.slot], I2[op.slot], diag, want_ntk)
        regs[li] = (K, T)
        for s in op.srcs:
            if prog.last_use[s] == li:
                regs[s] = None
    K, T = regs[prog.output]
    out_dtype = X.dtype
    return Kernel(K.astype(out_dtype) if "nngp" in get else None,
                  T.astype(out_dtype) if want_ntk else None)


def _numpy_activation(step: ActivationStep, K, T, I1, I2, diag, want_ntk: bool):
    if diag is not None:  # c = q exactly on the diagonal (ρ = 1), as neural-tangents
        K = K.copy()
        K[diag, diag] = step.qx
    if step.hermite:
        s = np.sqrt(step.qx[:, None] * step.qy[None, :])
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(s > 0, np.clip(K / np.where(s > 0, s, 1.0), -1.0, 1.0), 0.0)
        R1, R2 = step.Rx[:, None, :], step.Ry[None, :, :]
        if want_ntk:
            T = np.zeros_like(K) if step.zero_ntk else \
                T * (H.series_ntk(R1, R2, r, np.ones_like(r)) * I1[:, None] * I2[None, :])
        return H.series_nngp(R1, R2, r), T
    Qx, Qy = np.broadcast_arrays(step.qx[:, None], step.qy[None, :])
    if want_ntk:
        T = T * _ntk_values(step, Qx, Qy, K)
    return step.act.nngp(Qx, Qy, K), T


def _program(net) -> Program:
    return net if isinstance(net, Program) else net.program()
