r"""The NumPy reference of convolutional kernels: the image program (docs/math.md §3) run on whole
(pairs × P × P) states, register by register (branches, strides, padding, pooling, LayerNorm,
fan-ins), and the self pass (:func:`image_tables`) that gives each image's diagonal and the
per-pixel variance tables of its activations and LayerNorms — which the generated Numba and
CUDA kernels read too (:mod:`codegen.conv_numba` for networks whose self pass it does not generate).
"""
from __future__ import annotations

import warnings

import numpy as np

from .program import ImageOp as Op, ImageProgram
from .errors import ParameterError


def _windows(S: np.ndarray, axis: int, f: int, s: int, before: int, out: int) -> list[np.ndarray]:
    """The f strided views S[.., a + s·o, ..] (o < out) along ``axis``, zero padding ``before``
    and whatever completes the last window after (rows that no window reaches are dropped)."""
    after = (out - 1) * s + f - S.shape[axis] - before
    if before or after > 0:
        pad = [(0, 0)] * S.ndim
        pad[axis] = (before, max(after, 0))
        S = np.pad(S, pad)
    idx = [slice(None)] * S.ndim
    views = []
    for a in range(f):
        idx[axis] = slice(a, a + (out - 1) * s + 1, s)
        views.append(S[tuple(idx)])
    return views


def _conv_sum(S: np.ndarray, op: Op) -> np.ndarray:
    """Σ_δ S[..., s·i1+δ, s·j1+δ', s·i2+δ, s·j2+δ'] over the filter offsets (zero padding for SAME):
    the same offset on both images, the weights of one filter tap being shared."""
    ho, wo = op.hout, op.wout
    ah = (ho - 1) * op.sh + op.fh - op.hin - op.ph  # padding after (negative: rows no window reaches)
    aw = (wo - 1) * op.sw + op.fw - op.win - op.pw
    if op.ph or op.pw or ah > 0 or aw > 0:
        pad_h, pad_w = (op.ph, max(ah, 0)), (op.pw, max(aw, 0))
        S = np.pad(S, ((0, 0), pad_h, pad_w, pad_h, pad_w))
    out = np.zeros((S.shape[0], ho, wo, ho, wo))
    for a in range(op.fh):
        hs = slice(a, a + (ho - 1) * op.sh + 1, op.sh)
        for b in range(op.fw):
            ws = slice(b, b + (wo - 1) * op.sw + 1, op.sw)
            out += S[:, hs, ws, hs, ws]
    return out


def _pool(S: np.ndarray, op: Op) -> np.ndarray:
    """c² Σ over every pair of window pixels of the two images (a box sum along each of the four
    spatial axes), c the pool's scale per side."""
    for axis, f, s, before, out in ((1, op.fh, op.sh, op.ph, op.hout), (2, op.fw, op.sw, op.pw, op.wout),
                                    (3, op.fh, op.sh, op.ph, op.hout), (4, op.fw, op.sw, op.pw, op.wout)):
        S = sum(_windows(S, axis, f, s, before, out))
    return op.pool_scale ** 2 * S


def _diag(S: np.ndarray) -> np.ndarray:
    """Pixel variances K[i, i] of a (m, h, w, h, w) state, shape (m, h, w); a number state as is."""
    if S.ndim == 1:
        return S
    m, h, w = S.shape[:3]
    return np.einsum("mii->mi", S.reshape(m, h * w, h * w)).reshape(m, h, w)


def _norm_variance(op: Op, q: np.ndarray) -> np.ndarray:
    """What a LayerNorm divides by (before the square root), per pixel (m, h, w) for "norm",
    per image (m,) for "norm_image": q + ε, or the mean pixel variance + ε."""
    if op.kind == "norm_image":
        return q.reshape(q.shape[0], -1).mean(axis=1) + op.eps
    return q + op.eps


def _recursion(prog: ImageProgram, K: np.ndarray, want_ntk: bool, variances):
    """Run the program on the pair states K (m, H, W, H, W) (register -1); ``variances(l, K)``
    gives the (q_x, q_y) pixel variances, (m, h, w) (or (m,) for a number state), of the op at
    index l that reads them (an activation or a LayerNorm)."""
    regs = {-1: (K, None)}  # Θ None: 0 (until the first linear layer)
    last = {-1: -1}
    for l in range(len(prog.ops)):
        for s in prog.sources(l):
            last[s] = l
    for l, op in enumerate(prog.ops):
        srcs = prog.sources(l)
        K, T = regs[srcs[0]]
        if op.kind == "conv":
            Kn = op.w2 / (op.fh * op.fw) * _conv_sum(K, op) + op.b2
            if want_ntk:
                T = Kn.copy() if T is None else op.w2 / (op.fh * op.fw) * _conv_sum(T, op) + Kn
            K = Kn
        elif op.kind == "dense":
            K = op.w2 * K + op.b2
            if want_ntk:
                T = K.copy() if T is None else op.w2 * T + K
        elif op.kind == "act":
            qx, qy = variances(l, K)
            qx, qy = _expand(qx, K, "x"), _expand(qy, K, "y")
            if want_ntk:
                T = np.zeros_like(K) if T is None else T * _act_ntk(op.act, qx, qy, K)
            K = op.act.nngp(*np.broadcast_arrays(qx, qy, K))
        elif op.kind in ("norm", "norm_image"):
            vx, vy = (_norm_variance(op, q) for q in variances(l, K))
            if op.kind == "norm_image" and K.ndim > 1:
                vx, vy = vx.reshape(-1, 1, 1, 1, 1), vy.reshape(-1, 1, 1, 1, 1)
            else:
                vx, vy = _expand(vx, K, "x"), _expand(vy, K, "y")
            with np.errstate(divide="ignore", invalid="ignore"):
                f = 1.0 / np.sqrt(vx * vy)
            K = K * f
            T = None if T is None else T * f
        elif op.kind == "pool":
            K = _pool(K, op)
            T = None if T is None else _pool(T, op)
        elif op.kind == "flatten":
            K = _diag(K).reshape(K.shape[0], -1).mean(axis=1)
            T = None if T is None else _diag(T).reshape(T.shape[0], -1).mean(axis=1)
        elif op.kind == "gap":
            c = op.pool_scale ** 2
            K = c * K.reshape(K.shape[0], -1).sum(axis=1)
            T = None if T is None else c * T.reshape(T.shape[0], -1).sum(axis=1)
        elif op.kind == "sum":
            parts = [regs[s] for s in srcs]
            K = sum(k for k, _ in parts[1:]) + parts[0][0]
            ts = [t for _, t in parts if t is not None]
            T = None if not ts else (ts[0] if len(ts) == 1 else sum(ts[1:]) + ts[0])
        elif op.kind == "prod":  # product rule: Θ = Σ_b Θ_b Π_{b'≠b} K_b'
            for s in srcs[1:]:
                Kb, Tb = regs[s]
                parts = ([T * Kb] if T is not None else []) + ([K * Tb] if Tb is not None else [])
                T = None if not parts else (parts[0] if len(parts) == 1 else parts[0] + parts[1])
                K = K * Kb
        else:  # pragma: no cover - image_program admits nothing else
            raise ParameterError(f"unknown op {op.kind}")
        regs[l] = (K, T)
        for s in srcs:
            if last[s] == l:
                regs.pop(s, None)
    K, T = regs[len(prog.ops) - 1]
    if want_ntk and T is None:
        T = np.zeros_like(K)
    return K, T


def _act_ntk(act, qx, qy, K):
    with warnings.catch_warnings():
        # σ' with a delta (sign, step): the zero-a.e. convention, already stated by Activation.ntk
        warnings.simplefilter("ignore", RuntimeWarning)
        return act.ntk(*np.broadcast_arrays(qx, qy, K))


def _input_kernel(A: np.ndarray, B: np.ndarray | None) -> np.ndarray:
    C = A.shape[-1]
    if B is None:  # the images with themselves: (n, H, W, H, W)
        return np.einsum("ahwc,aHWc->ahwHW", A, A) / C
    return np.einsum("ahwc,bHWc->abhwHW", A, B).reshape((A.shape[0] * B.shape[0],) + A.shape[1:3] * 2) / C


def self_recursion(prog: ImageProgram, A: np.ndarray, want_ntk: bool = True):
    """Each image with itself: final (K, Θ) of shape (n,) and the pixel variances every
    activation and LayerNorm reads, {op index: (n, h, w) array (or (n,) after Flatten)}."""
    record: dict[int, np.ndarray] = {}

    def variances(l, K):
        q = _diag(K).copy()
        record[l] = q
        return q, q

    K, T = _recursion(prog, _input_kernel(A, None), want_ntk, variances)
    return K, T, record


def image_tables(prog: ImageProgram, A: np.ndarray, want_ntk: bool = True, chunk: int = 8,
                 coefficients: bool = True):
    """The self pass of the generated backends: each image's own recursion (in batches of
    ``chunk`` images, P×P numbers each), giving the diagonal (K(x, x), Θ(x, x)) and, for every
    activation (op index l), the per-pixel tables (q, √q, 1/√q, R) with q of shape (n, P)
    (or (n,) after Flatten) and R the Hermite coefficients r_l(q) (None for closed forms, or
    when ``coefficients`` is False); for a LayerNorm (v, √v, 1/√v, None) with v what it divides
    by: q + ε per pixel (n, P) ("norm"), the mean pixel variance + ε per image (n,) ("norm_image")."""
    n = A.shape[0]
    Kd, Td = np.empty(n), np.zeros(n)
    rec: dict[int, list] = {}
    for s0 in range(0, n, chunk):
        K, T, r = self_recursion(prog, A[s0:s0 + chunk], want_ntk)
        Kd[s0:s0 + chunk] = K
        if want_ntk:
            Td[s0:s0 + chunk] = T
        for l, q in r.items():
            rec.setdefault(l, []).append(q.reshape(q.shape[0], -1) if q.ndim > 1 else q)
    tables = {}
    for l, parts in rec.items():
        q = np.ascontiguousarray(np.concatenate(parts, axis=0))
        s = np.sqrt(q)
        with np.errstate(divide="ignore"):
            inv = np.where(s > 0, 1.0 / np.where(s > 0, s, 1.0), 0.0)
        op = prog.ops[l]
        if op.kind != "act":  # a LayerNorm: the tables of what it divides by, q + ε (or q̄ + ε)
            v = _norm_variance(op, q.reshape((q.shape[0], op.hin, op.win)) if q.ndim > 1 else q)
            v = np.ascontiguousarray(v.reshape(q.shape) if op.kind == "norm" else v)  # (n, P), or (n,)
            tables[l] = (v, np.sqrt(v), 1.0 / np.sqrt(v), None)
            continue
        act = op.act
        R = None
        if coefficients and act.dual.method != "closed-form":
            uq, idx = np.unique(q.ravel(), return_inverse=True)
            Rq, _ = act.dual.series.table(uq)
            R = np.ascontiguousarray(Rq[idx].reshape(q.shape + (Rq.shape[1],)))
        tables[l] = (q, s, inv, R)
    return Kd, Td, tables


def _expand(q: np.ndarray, K: np.ndarray, side: str) -> np.ndarray:
    if K.ndim == 1:
        return q
    m, h, w = q.shape
    return q.reshape(m, h, w, 1, 1) if side == "x" else q.reshape(m, 1, 1, h, w)


def numpy_conv_kernel(prog: ImageProgram, X: np.ndarray, Y: np.ndarray | None, get=("nngp", "ntk")):
    """Reference: all pairs at once with whole-array NumPy operations (memory n1·n2·P²)."""
    want_ntk = "ntk" in get
    n1 = X.shape[0]
    Kx, Tx, qX = self_recursion(prog, X, want_ntk)
    if Y is None:
        B, qY, n2 = X, qX, n1
    else:
        _, _, qY = self_recursion(prog, Y, False)
        B, n2 = Y, Y.shape[0]
    ia = np.repeat(np.arange(n1), n2)
    ib = np.tile(np.arange(n2), n1)

    def variances(l, K):  # noqa: ARG001
        return qX[l][ia], qY[l][ib]

    K, T = _recursion(prog, _input_kernel(X, B), want_ntk, variances)
    K = K.reshape(n1, n2)
    T = T.reshape(n1, n2) if want_ntk else None
    if Y is None:  # the diagonal from the images' own recursions (exactly ρ = 1 on it)
        K[np.arange(n1), np.arange(n1)] = Kx
        if want_ntk:
            T[np.arange(n1), np.arange(n1)] = Tx
    return (K if "nngp" in get else None), T

