r"""Per-point Hermite coefficients, the exact diagonal recursion and the automatic degree.

The sketch of an activation layer needs, for every point x, the norm-aware coefficients
r_l(q_x) = E[σ(√q_x g) h_l(g)], l = 0..L (docs/math.md §2), at the point's exact pre-activation
variance q_x, and the diagonal k(q_x, q_x, q_x) = E[σ(√q_x g)²].  Both come from the
:class:`~dualcalc.activation.Activation`: ``act.hermite(L, q)`` and ``act.nngp(q, q, q)``
(closed forms), or the same Gauss–Legendre quadrature (:func:`dualcalc.hermite.coefficient_table`)
for Hermite-method activations, whose adaptive ``act.nngp`` would cost a degree-1024 series per
point.  Homogeneous activations (catalog ``homogeneous_degree`` p, checked numerically) use
r_l(q) = q^{p/2} r_l(1) exactly.  Many distinct variances are handled on a log-spaced grid
with cubic-spline interpolation in log q on one fixed grid per activation (the same for
every batch, so features do not depend on chunking), refined until the spline matches fresh quadrature
at the grid midpoints to 1e-10 relative.

The sketch reads the network's program (:mod:`dualcalc.program`, :func:`sketch_program`):
the diagonal recursion and the degree choice run it register by register, branches
(Sum, Prod) and LayerNorm (Normalize) included; :func:`fc_program` gives the flat
dense/activation rows of a serial program, which the homogeneous method reads.
"""
from __future__ import annotations


import numpy as np
from scipy.interpolate import CubicSpline

from .. import hermite as H
from ..activation import Activation
from ..dual import HERMITE
from ..errors import InputError, ParameterError
from ..network import Network
from ..program import Affine, Input, Normalize, Pointwise, Program, Prod, Sum
from ..warn import warn

__all__ = ["sketch_program", "fc_program", "CoefficientTable", "diagonal_recursion", "choose_degrees",
           "homogeneous_degree"]

#: Variances interpolated on the activation's fixed log-q spline grid; quadrature outside it.
GRID_RANGE = (1e-4, 1e4)


def sketch_program(net: Network) -> Program:
    """The network's program (:meth:`Network.program`), checked to hold only operations the
    layer-wise sketch runs: Dense, activations, FanInSum/FanInConcat with non-negative weights,
    FanInProd and LayerNorm."""
    if not isinstance(net, Network):
        raise ParameterError(f"net must be a dualcalc network made with dc.serial(...), got {type(net).__name__}")
    prog = net.program()
    for op in prog.ops:
        if not isinstance(op, Input | Affine | Pointwise | Normalize | Sum | Prod):
            raise ParameterError(f"KernelSketch cannot sketch the operation {op.label!r} of this network")
        if isinstance(op, Sum) and getattr(op, "weights", None) is not None and min(op.weights) < 0:
            raise ParameterError(f"{op.label}: a weighted sum with a negative weight {min(op.weights)!r} is not "
                                 "a kernel of random features (K may be indefinite); KernelSketch needs weights ≥ 0")
    return prog


def fc_program(net: Network | Program) -> list[tuple] | None:
    """The flat rows ``("dense", W², b², std)`` (``std`` None for the NTK parameterization, else
    the input width, "d" for the data dimension) and ``("act", Activation)`` of a serial
    Dense/activation program (what the homogeneous method reads); None when the program has
    branches or LayerNorm."""
    prog = sketch_program(net) if isinstance(net, Network) else net
    if not prog.serial:
        return None
    rows: list[tuple] = []
    for op in prog.ops[1:]:
        if isinstance(op, Affine):
            rows.append(("dense", op.w2, op.b2, None if not op.standard else (op.width if op.width is not None else "d")))
        elif isinstance(op, Pointwise):
            rows.append(("act", op.act))
        else:
            return None
    return rows


def homogeneous_degree(act: Activation) -> float | None:
    """p when σ is positively p-homogeneous (catalog ``homogeneous_degree``, verified: r_l(q) =
    q^{p/2} r_l(1) at q = 0.5 and 2 to 1e-9), else None."""
    entry = getattr(act, "entry", None)
    p = getattr(entry, "homogeneous_degree", None) if entry is not None else None
    if p is None:
        return None
    try:
        R = act.hermite(6, np.array([0.5, 1.0, 2.0]))
    except Exception:  # pragma: no cover - defensive
        return None
    scale = np.max(np.abs(R[1])) + 1e-300
    for i, q in ((0, 0.5), (2, 2.0)):
        if np.max(np.abs(R[i] - q ** (p / 2) * R[1])) > 1e-9 * scale * max(1.0, q ** (p / 2)):
            return None
    return float(p)


def _second_moment(act: Activation, q: np.ndarray, degree: int) -> np.ndarray:
    """k(q, q, q) = E[σ(√q g)²] at the variances q (float64)."""
    if act.dual.method == HERMITE:
        return H.coefficient_table(act.function, max(degree, 1), q, act.kinks)[1]
    return np.asarray(act.nngp(q, q, q), dtype=np.float64)


class CoefficientTable:
    """r_l(q) (l = 0..degree) and k(q, q, q) for one activation at arrays of variances."""

    def __init__(self, act: Activation, degree: int):
        self.act = act
        self.degree = int(degree)
        self.p = homogeneous_degree(act)
        if self.p is not None:
            self.r1 = np.asarray(act.hermite(self.degree, 1.0), dtype=np.float64)
            self.m1 = float(_second_moment(act, np.array([1.0]), self.degree)[0])

    def __call__(self, q) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(q, dtype=np.float64).ravel()
        if np.any(~np.isfinite(q)) or np.any(q < 0):
            raise ValueError("variances must be finite and non-negative")
        if self.p is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                sc = np.where(q > 0, q ** (self.p / 2), 0.0 if self.p > 0 else 1.0)
            return sc[:, None] * self.r1[None, :], sc * sc * self.m1
        uq, inv = np.unique(q, return_inverse=True)
        R, M = self._interpolated(uq)
        return R[inv], M[inv]

    def _exact(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        R = np.asarray(self.act.hermite(self.degree, q), dtype=np.float64).reshape(q.size, self.degree + 1)
        return R, _second_moment(self.act, q, self.degree)

    def _interpolated(self, uq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        R = np.empty((uq.size, self.degree + 1))
        M = np.empty(uq.size)
        zero = uq == 0
        if zero.any():
            R[zero], M[zero] = self._exact(uq[zero])
        pos = uq[~zero]
        # One fixed grid per activation (not per batch): a point's coefficients then do not
        # depend on which other points share its batch, so transforms are chunking-independent.
        inside = (pos >= GRID_RANGE[0]) & (pos <= GRID_RANGE[1])
        out = np.flatnonzero(~zero)
        if (~inside).any():
            R[out[~inside]], M[out[~inside]] = self._exact(pos[~inside])
        if inside.any():
            sp_R, sp_M = self._splines()
            ls = np.log(pos[inside])
            R[out[inside]] = sp_R(ls)
            M[out[inside]] = sp_M(ls)
        return R, M

    def _splines(self):
        if getattr(self, "_spl", None) is not None:
            return self._spl
        lo, hi = np.log(GRID_RANGE[0]), np.log(GRID_RANGE[1])
        G = 257
        while True:
            s = np.linspace(lo, hi, G)
            Rg, Mg = self._exact(np.exp(s))
            sp_R = CubicSpline(s, Rg, axis=0)
            sp_M = CubicSpline(s, Mg)
            mid = (s[:-1] + s[1:])[:: max(1, (G - 1) // 32)] / 2
            Rm, Mm = self._exact(np.exp(mid))
            scale = np.sqrt(np.maximum(Mm, 1e-300))
            err = max(np.max(np.abs(sp_R(mid) - Rm) / scale[:, None]), np.max(np.abs(sp_M(mid) - Mm) / scale**2))
            if err <= 1e-10 or G >= 4097:
                if err > 1e-6:
                    warn(f"{self.act.label}: the sketch's Hermite coefficient tables interpolate r_l(q) with a "
                         f"relative error up to {err:.1e} (above 1e-6); the features are that much less accurate "
                         f"than the sketch's own error — rescale the inputs toward unit variance",
                         RuntimeWarning, key=("interpolation", self.act.label))
                break
            G = 2 * G - 1
        self._spl = (sp_R, sp_M)
        return self._spl


def _wsum(xs, weights):
    """Σ w_i x_i (weights None: all 1), in source order."""
    out = xs[0] if weights is None else weights[0] * xs[0]
    for i in range(1, len(xs)):
        out = out + (xs[i] if weights is None else weights[i] * xs[i])
    return out


def _wprod(xs):
    out = xs[0]
    for x in xs[1:]:
        out = out * x
    return out


def norm_offset(op: Normalize, q: np.ndarray, where: str = "X") -> np.ndarray:
    """q + ε of a LayerNorm's input, refused (InputError) where it is 0 (eps = 0, zero rows)."""
    e = q + op.eps
    if not np.all(e > 0):
        raise InputError(f"{op.label}: row {int(np.flatnonzero(~(e > 0))[0])} of {where} has zero variance "
                         "there, which LayerNorm with eps=0 cannot normalise")
    return e


def diagonal_recursion(prog: Program | list[tuple], q0: np.ndarray, d: int, moments) -> dict:
    """Exact per-point diagonals through the network (O(n · depth)).

    ``moments[a](q)`` returns k(q, q, q) for activation number a.  Returns
    ``{"pre": [q before activation a], "norm": [q + ε before LayerNorm number b],
    "nngp": final K(x,x), "ntk": None}`` (the NTK diagonal is not needed by the sketch).
    ``prog`` is a :class:`~dualcalc.program.Program` or the flat rows of :func:`fc_program`.
    """
    if not isinstance(prog, Program):  # flat serial rows (homogeneous method)
        q = np.asarray(q0, dtype=np.float64)
        pre = []
        a = 0
        for op in prog:
            if op[0] == "dense":
                _, w2, b2, _std = op
                q = w2 * q + b2
            else:
                pre.append(q)
                q = moments[a](q)
                a += 1
        return {"pre": pre, "norm": [], "nngp": q, "ntk": None}
    regs: list = [None] * len(prog.ops)
    regs[0] = np.asarray(q0, dtype=np.float64)
    pre, norm = [], []
    for r, op in enumerate(prog.ops):
        if r == 0:
            continue
        ins = [regs[s] for s in op.srcs]
        if isinstance(op, Affine):
            regs[r] = op.w2 * ins[0] + op.b2
        elif isinstance(op, Pointwise):
            pre.append(ins[0])
            regs[r] = moments[len(pre) - 1](ins[0])
        elif isinstance(op, Normalize):
            e = norm_offset(op, ins[0])
            norm.append(e)
            regs[r] = ins[0] / e
        elif isinstance(op, Sum):
            regs[r] = _wsum(ins, getattr(op, "weights", None))
        elif isinstance(op, Prod):
            regs[r] = _wprod(ins)
        else:  # pragma: no cover - sketch_program refuses it
            raise ParameterError(f"the sketch cannot run {op!r}")
    return {"pre": pre, "norm": norm, "nngp": regs[prog.output], "ntk": None}


def _series(R1: np.ndarray, rho: np.ndarray, L: int, invS: np.ndarray, want_d: bool):
    """Σ_{l≤L} r_l r_l' ρ^l and Σ_{1≤l≤L} l r_l r_l' ρ^{l−1}/√(qq') on a subsample (Horner)."""
    k = np.zeros_like(rho)
    for l in range(L, -1, -1):
        k = k * rho + np.outer(R1[:, l], R1[:, l])
    if not want_d:
        return k, None
    dk = np.zeros_like(rho)
    for l in range(L, 0, -1):
        dk = dk * rho + l * np.outer(R1[:, l], R1[:, l])
    return k, dk * invS


class _MiniRecursion:
    """The sketch's recursion on a subsample, exactly as the features see it: coefficients at
    the *exact* variances, correlations from the (possibly truncated) previous layer, LayerNorm
    by the exact variances; the program run register by register."""

    def __init__(self, prog: Program, K0, d, kernel, probe):
        self.prog, self.K0, self.d, self.kernel, self.probe = prog, K0, d, kernel, probe
        self.R, self.invS, self.normF = [], [], []
        # exact diagonals, then the coefficient tables at the probe degree
        qs: list = [None] * len(prog.ops)
        qs[0] = np.diag(K0).copy()
        for r, op in enumerate(prog.ops):
            if r == 0:
                continue
            ins = [qs[s] for s in op.srcs]
            q = ins[0]
            if isinstance(op, Affine):
                qs[r] = op.w2 * q + op.b2
            elif isinstance(op, Pointwise):
                act = op.act
                R = np.asarray(act.hermite(probe, q), dtype=np.float64).reshape(q.size, probe + 1)
                sq = np.sqrt(np.maximum(q, 0.0))
                S = np.outer(sq, sq)
                with np.errstate(divide="ignore"):
                    self.invS.append(np.where(S > 0, 1.0 / np.where(S > 0, S, 1.0), 0.0))
                self.R.append(R)
                qs[r] = (R**2).sum(axis=1)
            elif isinstance(op, Normalize):
                e = norm_offset(op, q, "the subsample")
                f = 1.0 / np.sqrt(e)
                self.normF.append(np.outer(f, f))
                qs[r] = q / e
            elif isinstance(op, Sum):
                qs[r] = _wsum(ins, getattr(op, "weights", None))
            else:
                qs[r] = _wprod(ins)

    def run(self, degrees: dict) -> np.ndarray:
        prog = self.prog
        want_t = self.kernel == "ntk"
        regs: list = [None] * len(prog.ops)
        K = np.array(self.K0, dtype=np.float64)
        regs[0] = (K, np.zeros_like(K))
        a = b = 0
        for r, op in enumerate(prog.ops):
            if r == 0:
                continue
            ins = [regs[s] for s in op.srcs]
            K, T = ins[0]
            if isinstance(op, Affine):
                Kold = K
                K = op.w2 * K + op.b2
                if not op.standard:
                    T = op.w2 * T + K
                else:
                    width = self.d if op.width is None else op.width
                    T = width * Kold + op.w2 * T + (1.0 if op.bias else 0.0)
            elif isinstance(op, Pointwise):
                dg = np.sqrt(np.maximum(np.diag(K), 0.0))
                S = np.outer(dg, dg)
                with np.errstate(divide="ignore", invalid="ignore"):
                    rho = np.where(S > 0, np.clip(K / np.where(S > 0, S, 1.0), -1.0, 1.0), 0.0)
                L = degrees.get(a, self.probe)
                K, dk = _series(self.R[a], rho, L, self.invS[a], want_t)
                if want_t:
                    T = np.zeros_like(T) if op.act.dual.ntk_convention == "zero-a.e." else T * dk
                a += 1
            elif isinstance(op, Normalize):
                K, T = K * self.normF[b], T * self.normF[b]
                b += 1
            elif isinstance(op, Sum):
                w = getattr(op, "weights", None)
                K, T = _wsum([x[0] for x in ins], w), _wsum([x[1] for x in ins], w)
            else:  # Prod: the product rule
                K, T = ins[0]
                for Ki, Ti in ins[1:]:
                    K, T = K * Ki, T * Ki + K * Ti
            regs[r] = (K, T)
        K, T = regs[prog.output]
        return T if want_t else K


def choose_degrees(prog: Program, K0: np.ndarray, d: int, kernel: str, tol: float, max_degree: int,
                   probe: int = 48) -> tuple[list[int], list[float]]:
    """Smallest degree per activation whose truncation changes the *final* kernel by ≤ tol.

    Emulates the sketch's recursion on a subsample (Gram matrix K0 = X Xᵀ/d) with the Mehler
    series at degree ``probe`` as the reference, truncates one activation layer at a time at
    degree L, and measures the relative Frobenius change of the network's final NNGP or NTK;
    each of the A activation layers gets the budget tol/√A.  Later layers damp or amplify an
    early truncation, which this measures instead of guessing.  The error is non-increasing in
    L (up to round-off), so the smallest admissible L is found by bisection.  Returns the degrees
    and the estimated errors at those degrees.
    """
    rec = _MiniRecursion(prog, K0, d, kernel, probe)
    n_act = len(rec.R)
    ref = rec.run({})
    nref = np.linalg.norm(ref) or 1.0
    budget = tol / np.sqrt(max(n_act, 1))
    degrees, errs = [], []
    cap = min(int(max_degree), probe)
    for a in range(n_act):
        cache: dict[int, float] = {}

        def err(L):
            if L not in cache:
                cache[L] = float(np.linalg.norm(rec.run({a: L}) - ref) / nref)
            return cache[L]

        if err(cap) > budget:
            L = cap
        else:
            lo, hi = 1, cap  # err(hi) ≤ budget
            while lo < hi:
                mid = (lo + hi) // 2
                if err(mid) <= budget:
                    hi = mid
                else:
                    lo = mid + 1
            L = hi
        degrees.append(int(L))
        errs.append(err(L))
    return degrees, errs
