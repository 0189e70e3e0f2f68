r"""The NumPy reference of convolutional kernels: the image recursion (docs/math.md §3) on whole
(pairs × P × P) states, and the self pass (:func:`image_tables`) that gives each image's
diagonal and per-pixel variance tables — which the generated Numba and CUDA kernels read
too (:mod:`codegen.conv_numba` for networks whose self pass it does not generate).
"""
from __future__ import annotations

import warnings

import numpy as np

from .program import ImageOp as Op, ImageProgram
from .errors import ParameterError


def _conv_sum(S: np.ndarray, op: Op) -> np.ndarray:
    """Σ_δ S[..., i1+δ, j1+δ', i2+δ, j2+δ'] over the filter window (zero padding for SAME)."""
    fh, fw, ph, pw = op.fh, op.fw, op.ph, op.pw
    m = S.shape[0]
    same = op.hout == op.hin and op.wout == op.win
    if same and (fh > 1 or fw > 1):
        pad_h, pad_w = (ph, fh - 1 - ph), (pw, fw - 1 - pw)
        S = np.pad(S, ((0, 0), pad_h, pad_w, pad_h, pad_w))
    ho, wo = op.hout, op.wout
    out = np.zeros((m, ho, wo, ho, wo))
    for a in range(fh):
        for b in range(fw):
            out += S[:, a:a + ho, b:b + wo, a:a + ho, b:b + wo]
    return out


def _pool(S: np.ndarray, op: Op) -> np.ndarray:
    m = S.shape[0]
    ho, wo, fh, fw = op.hout, op.wout, op.fh, op.fw
    S = S[:, :ho * fh, :wo * fw, :ho * fh, :wo * fw]
    return S.reshape(m, ho, fh, wo, fw, ho, fh, wo, fw).mean(axis=(2, 4, 6, 8))


def _diag(S: np.ndarray) -> np.ndarray:
    """Pixel variances K[i, i] of a (m, h, w, h, w) state, shape (m, h, w); a number state as is."""
    if S.ndim == 1:
        return S
    m, h, w = S.shape[:3]
    return np.einsum("mii->mi", S.reshape(m, h * w, h * w)).reshape(m, h, w)


def _recursion(prog: ImageProgram, K: np.ndarray, want_ntk: bool, variances):
    """Run the layers on the pair states K (m, H, W, H, W); ``variances(l, K)`` gives the
    (q_x, q_y) arrays broadcastable against K for the activation at op index l."""
    T = None  # Θ = 0 until the first linear layer
    for l, op in enumerate(prog.ops):
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
            if want_ntk:
                T = np.zeros_like(K) if T is None else T * _act_ntk(op.act, qx, qy, K)
            K = op.act.nngp(*np.broadcast_arrays(qx, qy, K))
        elif op.kind == "pool":
            K = _pool(K, op)
            T = None if T is None else _pool(T, op)
        elif op.kind == "flatten":
            K = _diag(K).reshape(K.shape[0], -1).mean(axis=1)
            T = None if T is None else _diag(T).reshape(T.shape[0], -1).mean(axis=1)
        elif op.kind == "gap":
            K = K.reshape(K.shape[0], -1).mean(axis=1)
            T = None if T is None else T.reshape(T.shape[0], -1).mean(axis=1)
        else:  # pragma: no cover - image_program admits nothing else
            raise ParameterError(f"unknown op {op.kind}")
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
    """Each image with itself: final (K, Θ) of shape (n,) and the pixel variances at every
    activation, {op index: (n, h, w) array (or (n,) after Flatten)}."""
    record: dict[int, np.ndarray] = {}

    def variances(l, K):
        q = _diag(K).copy()
        record[l] = q
        return _expand(q, K, "x"), _expand(q, K, "y")

    K, T = _recursion(prog, _input_kernel(A, None), want_ntk, variances)
    return K, T, record


def image_tables(prog: ImageProgram, A: np.ndarray, want_ntk: bool = True, chunk: int = 8,
                 coefficients: bool = True):
    """The self pass of the generated backends: each image's own recursion (in batches of
    ``chunk`` images, P×P numbers each), giving the diagonal (K(x, x), Θ(x, x)) and, for every
    activation (op index l), the per-pixel tables (q, √q, 1/√q, R) with q of shape (n, P)
    (or (n,) after Flatten) and R the Hermite coefficients r_l(q) (None for closed forms, or
    when ``coefficients`` is False)."""
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
        act = prog.ops[l].act
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

    def variances(l, K):
        qa, qb = qX[l][ia], qY[l][ib]
        return _expand(qa, K, "x"), _expand(qb, K, "y")

    K, T = _recursion(prog, _input_kernel(X, B), want_ntk, variances)
    K = K.reshape(n1, n2)
    T = T.reshape(n1, n2) if want_ntk else None
    if Y is None:  # the diagonal from the images' own recursions (exactly ρ = 1 on it)
        K[np.arange(n1), np.arange(n1)] = Kx
        if want_ntk:
            T[np.arange(n1), np.arange(n1)] = Tx
    return (K if "nngp" in get else None), T

