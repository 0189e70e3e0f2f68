r"""An independent oracle for k = E[σ(u)σ(v)] and k̇ = E[σ'(u)σ'(v)] of smooth activations.

(u, v) ~ N(0, [[q1, c], [c, q2]]), ρ = c/√(q1 q2).  Nothing here uses dualcalc: σ and σ' are
written by hand in NumPy, and the expectation is a tensor-product composite Gauss–Legendre
rule in (x, y) = (u, v) written as

    k = ∫ φ(x; q1) σ(x) [ ∫ φ(y; μ(x), s²) σ(y) dy ] dx,   μ = ρ√(q2/q1)·x,  s² = q2(1 − ρ²),

with panels of width h ≤ min(1/2, s/2) (resp. √q1·√(1−ρ²)/2 in x) aligned to 0 in both
variables (so the kink of softsign at 0 is a panel edge), 16 nodes per panel, over ±10
standard deviations (φ(10) ≈ 8e-23).  For each block of x-nodes only the y-panels within
10 s of μ are used.  ρ = ±1 is the 1-D integral ∫ φ(x; q1) σ(x) σ(±√(q2/q1) x) dx.
:func:`self_convergence` compares against a finer rule (24 nodes, h/1.5, ±12 sd).
"""
from __future__ import annotations

import numpy as np
from scipy.special import expit

_SQRT_2PI = np.sqrt(2.0 * np.pi)


def _softplus(x):
    return np.logaddexp(0.0, x)


def _mish(x):
    return x * np.tanh(_softplus(x))


def _dmish(x):
    t = np.tanh(_softplus(x))
    return t + x * (1.0 - t * t) * expit(x)


#: name -> (dualcalc formula, σ, σ') — σ' written by hand (not dualcalc's derivative).
ACTIVATIONS = {
    "tanh": ("tanh(x)", np.tanh, lambda x: 1.0 - np.tanh(x) ** 2),
    "sigmoid": ("1/(1 + exp(-x))", expit, lambda x: expit(x) * expit(-x)),
    "softsign": ("x/(1 + abs(x))", lambda x: x / (1.0 + np.abs(x)), lambda x: 1.0 / (1.0 + np.abs(x)) ** 2),
    "atan": ("atan(x)", np.arctan, lambda x: 1.0 / (1.0 + x * x)),
    "x/sqrt(1+x^2)": ("x/sqrt(1 + x**2)", lambda x: x / np.sqrt(1.0 + x * x), lambda x: (1.0 + x * x) ** -1.5),
    "softplus": ("log(1 + exp(x))", _softplus, expit),
    "swish": ("x/(1 + exp(-x))", lambda x: x * expit(x), lambda x: expit(x) * (1.0 + x * expit(-x))),
    "mish": ("x*tanh(log(1 + exp(x)))", _mish, _dmish),
    "logcosh": ("log(cosh(x))", lambda x: np.logaddexp(x, -x) - np.log(2.0), np.tanh),
}


def _panels(lo: float, hi: float, h: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre nodes/weights on panels [j h, (j+1) h] covering [lo, hi] (edges on h·Z)."""
    t, w = np.polynomial.legendre.leggauss(n)
    j = np.arange(np.floor(lo / h), np.ceil(hi / h))
    a = j[:, None] * h
    return (a + h * (t[None, :] + 1.0) / 2.0).ravel(), np.broadcast_to(h * w / 2.0, (j.size, n)).ravel()


def expectation(f, q1: float, q2: float, rho: float, *, n: int = 16, shrink: float = 1.0,
                R: float = 10.0) -> float:
    """E[f(u) f(v)] for (u, v) with variances q1, q2 > 0 and correlation ρ ∈ [−1, 1]."""
    q1, q2, rho = float(q1), float(q2), float(rho)
    s1, s2 = np.sqrt(q1), np.sqrt(q2)
    if abs(rho) == 1.0:
        h = min(0.5, s1 / 2.0, s1 / s2 / 2.0) / shrink
        x, w = _panels(-R * s1, R * s1, h, n)
        px = np.exp(-x * x / (2.0 * q1)) / (_SQRT_2PI * s1)
        return float(np.sum(w * px * f(x) * f(rho * (s2 / s1) * x)))
    om = np.sqrt(1.0 - rho * rho)
    sy = s2 * om
    hx = min(0.5, s1 * om / 2.0) / shrink
    hy = min(0.5, sy / 2.0) / shrink
    x, wx = _panels(-R * s1, R * s1, hx, n)
    y, wy = _panels(-R * s2 - R * sy, R * s2 + R * sy, hy, n)
    fy = f(y)
    px = wx * np.exp(-x * x / (2.0 * q1)) / (_SQRT_2PI * s1) * f(x)
    beta = rho * s2 / s1
    total = 0.0
    for a in range(0, x.size, 256):
        xb = x[a:a + 256]
        mu = beta * xb
        lo = np.searchsorted(y, mu.min() - R * sy)
        hi = np.searchsorted(y, mu.max() + R * sy)
        yy = y[lo:hi]
        z = (yy[None, :] - mu[:, None]) / sy
        m = (np.exp(-0.5 * z * z) * (wy[lo:hi] * fy[lo:hi])[None, :]).sum(axis=1) / (_SQRT_2PI * sy)
        total += float(np.dot(px[a:a + 256], m))
    return total


def k_and_kdot(name: str, q1: float, q2: float, rho: float, **kw) -> tuple[float, float]:
    """(k, k̇) of the named activation at variances q1, q2 and correlation ρ."""
    _, f, df = ACTIVATIONS[name]
    return expectation(f, q1, q2, rho, **kw), expectation(df, q1, q2, rho, **kw)


def self_convergence(name: str, q1: float, q2: float, rho: float) -> float:
    """Largest change of (k, k̇) under a finer rule, relative to √(k11 k22) resp. √(k̇11 k̇22)."""
    a = k_and_kdot(name, q1, q2, rho)
    b = k_and_kdot(name, q1, q2, rho, n=24, shrink=1.5, R=12.0)
    s = scales(name, q1, q2)
    return max(abs(a[0] - b[0]) / s[0], abs(a[1] - b[1]) / s[1])


def scales(name: str, q1: float, q2: float) -> tuple[float, float]:
    """√(k(q1,q1,q1)·k(q2,q2,q2)) and the same for k̇: the scales errors are relative to."""
    k11, t11 = k_and_kdot(name, q1, q1, 1.0)
    k22, t22 = k_and_kdot(name, q2, q2, 1.0)
    return np.sqrt(k11 * k22), np.sqrt(t11 * t22)
