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
"""
from __future__ import annotations


import numpy as np
from scipy.interpolate import CubicSpline

from .. import hermite as H
from ..activation import Activation
from ..dual import HERMITE
from ..errors import ParameterError
from ..network import Network, layer_program
from ..warn import warn

__all__ = ["fc_program", "CoefficientTable", "diagonal_recursion", "choose_degrees", "homogeneous_degree"]

#: Variances interpolated on the activation's fixed log-q spline grid; quadrature outside it.
GRID_RANGE = (1e-4, 1e4)


def fc_program(net: Network) -> list[tuple]:
    """The network's layer program, checked to be a fully connected serial network."""
    if not isinstance(net, Network):
        raise ParameterError(f"net must be a dualcalc network made with dc.serial(...), got {type(net).__name__}")
    prog = layer_program(net)
    for op in prog:
        if op[0] not in ("dense", "act"):
            raise ParameterError(
                f"KernelSketch sketches fully connected serial networks (Dense layers and activations); "
                f"layer {op[1]!r} is not supported")
    if not prog or prog[0][0] != "dense":
        raise ParameterError("the network must start with a Dense layer")
    return prog


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


def diagonal_recursion(prog: list[tuple], q0: np.ndarray, d: int, moments) -> dict:
    """Exact per-point diagonals through the network (O(n · depth)).

    ``moments[a](q)`` returns k(q, q, q) for activation number a.  Returns
    ``{"pre": [q before activation a], "nngp": final K(x,x), "ntk": final Θ(x,x) or None}``
    (the NTK diagonal is not needed by the sketch and left None).
    """
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
    return {"pre": pre, "nngp": q}


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
    the *exact* variances, correlations from the (possibly truncated) previous layer."""

    def __init__(self, prog, K0, d, kernel, probe):
        self.prog, self.K0, self.d, self.kernel, self.probe = prog, K0, d, kernel, probe
        self.R, self.invS = [], []
        # exact diagonals, then the coefficient tables at the probe degree
        q = np.diag(K0).copy()
        for op in prog:
            if op[0] == "dense":
                q = op[1] * q + op[2]
            else:
                act = op[1]
                R = np.asarray(act.hermite(probe, q), dtype=np.float64).reshape(q.size, probe + 1)
                sq = np.sqrt(np.maximum(q, 0.0))
                S = np.outer(sq, sq)
                with np.errstate(divide="ignore"):
                    self.invS.append(np.where(S > 0, 1.0 / np.where(S > 0, S, 1.0), 0.0))
                self.R.append(R)
                q = (R**2).sum(axis=1)

    def run(self, degrees: dict) -> np.ndarray:
        K = np.array(self.K0, dtype=np.float64)
        T = np.zeros_like(K)
        want_t = self.kernel == "ntk"
        a = 0
        for op in self.prog:
            if op[0] == "dense":
                _, w2, b2, std = op
                Kold = K
                K = w2 * K + b2
                if std is None:
                    T = w2 * T + K
                else:
                    width = self.d if std == "d" else std
                    T = width * Kold + w2 * T + (1.0 if b2 > 0 else 0.0)
                continue
            dg = np.sqrt(np.maximum(np.diag(K), 0.0))
            S = np.outer(dg, dg)
            with np.errstate(divide="ignore", invalid="ignore"):
                rho = np.where(S > 0, np.clip(K / np.where(S > 0, S, 1.0), -1.0, 1.0), 0.0)
            L = degrees.get(a, self.probe)
            K, dk = _series(self.R[a], rho, L, self.invS[a], want_t)
            if want_t:
                T = np.zeros_like(T) if op[1].dual.ntk_convention == "zero-a.e." else T * dk
            a += 1
        return T if want_t else K


def choose_degrees(prog: list[tuple], K0: np.ndarray, d: int, kernel: str, tol: float, max_degree: int,
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
