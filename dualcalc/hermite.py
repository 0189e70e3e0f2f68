r"""Norm-aware Hermite coefficients by quadrature (docs/math.md §2).

With probabilists' Hermite polynomials normalised to h_l = He_l / √(l!) and
g ~ N(0, 1), the coefficients of σ at variance q are

    r_l(q) = E[σ(√q g) h_l(g)],   l = 0, 1, ...

and for a Gaussian pair with variances q1, q2 and correlation ρ (Mehler)

    k(q1, q2, c) = Σ_l r_l(q1) r_l(q2) ρ^l,
    k̇(q1, q2, c) = Σ_{l≥1} l r_l(q1) r_l(q2) ρ^{l-1} / √(q1 q2).

Σ_l r_l(q)² = E[σ(√q g)²], so the *tail energy* T_L(q) = E[σ_q²] − Σ_{l≤L} r_l(q)²
bounds the truncation error: |k − k_L| ≤ √(T_L(q1) T_L(q2)) (Cauchy–Schwarz).

Quadrature: composite Gauss–Legendre panels of unit width on [−L, L], with
panel edges at every kink of σ (so piecewise-smooth σ are integrated to
round-off), and Hermite *functions* ψ_l(t) = h_l(t) e^{−t²/4} evaluated by a
rescaled three-term recurrence that neither overflows nor underflows at high
degree.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .errors import DivergentError

_GL_NODES = 24
_GL = np.polynomial.legendre.leggauss(_GL_NODES)
_SQRT_2PI = np.sqrt(2.0 * np.pi)


def half_width(degree: int) -> float:
    """Integration half-width in g-space: beyond the last turning point 2√l of h_l."""
    return 14.0 + 2.0 * np.sqrt(max(degree, 1))


def nodes_and_weights(degree: int, breakpoints: Sequence[float] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Nodes t_j and weights w_j with Σ w_j f(t_j) ≈ ∫ f(t) dt on [−L, L].

    Panel edges are the integers in range plus the breakpoints (kinks, in g-space).
    """
    L = half_width(degree)
    edges = set(np.arange(-np.ceil(L), np.ceil(L) + 1.0).tolist())
    for b in breakpoints:
        if -L < b < L:
            edges.add(float(b))
    e = np.array(sorted(edges))
    e = e[np.concatenate([[True], np.diff(e) > 1e-14])]
    a, b = e[:-1, None], e[1:, None]
    half = (b - a) / 2
    t = (a + b) / 2 + half * _GL[0][None, :]
    w = half * _GL[1][None, :]
    return t.ravel(), w.ravel()


def hermite_functions(t: np.ndarray, degree: int) -> np.ndarray:
    """ψ_l(t) = h_l(t)·e^{−t²/4}, shape (len(t), degree+1), for l = 0..degree.

    The recurrence ψ_{l+1} = (t ψ_l − √l ψ_{l−1}) / √(l+1) runs on values rescaled
    whenever they grow large, with the scale kept as a log, so that neither
    e^{−t²/4} underflowing nor t^l/√(l!) overflowing loses digits.
    """
    t = np.asarray(t, dtype=np.float64)
    out = np.empty((t.size, degree + 1))
    logscale = -(t**2) / 4.0
    prev = np.zeros_like(t)
    cur = np.ones_like(t)
    out[:, 0] = np.exp(logscale)
    for l in range(degree):
        nxt = (t * cur - np.sqrt(l) * prev) / np.sqrt(l + 1.0)
        prev, cur = cur, nxt
        big = np.abs(cur) > 1e100
        if big.any():
            s = np.where(big, np.abs(cur), 1.0)
            cur = cur / s
            prev = prev / s
            logscale = logscale + np.log(s)
        with np.errstate(under="ignore", over="ignore"):
            out[:, l + 1] = cur * np.exp(np.minimum(logscale, 700.0))
    return out


def _weighted_values(f: Callable[[np.ndarray], np.ndarray], arg: np.ndarray, w: np.ndarray,
                     t: np.ndarray) -> np.ndarray:
    """f(arg)·w·e^{−t²/4}/√(2π), with 0 where the weight vanishes (no inf·0 = NaN)."""
    with np.errstate(all="ignore"):
        fv = np.asarray(f(arg), dtype=np.float64)
        fv = np.broadcast_to(fv, arg.shape)
        g = w * np.exp(-(t**2) / 4.0) / _SQRT_2PI
        val = fv * g
    return np.where(g == 0.0, 0.0, val)


def coefficient_table(
    f: Callable[[np.ndarray], np.ndarray],
    degree: int,
    q: np.ndarray | float,
    kinks: Sequence[float] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Hermite coefficients r_l(q) and second moments E[f(√q g)²].

    Returns ``(R, M)`` with ``R[i, l] = r_l(q_i)`` (shape (len(q), degree+1)) and
    ``M[i] = E[f(√q_i g)²]``.  ``kinks`` are the points (in x) where f is not
    smooth; q = 0 gives r_0 = f(0), r_l = 0 for l ≥ 1.
    """
    qs = np.atleast_1d(np.asarray(q, dtype=np.float64))
    if np.any(~np.isfinite(qs)) or np.any(qs < 0):
        raise ValueError("variances q must be finite and non-negative")
    R = np.zeros((qs.size, degree + 1))
    M = np.zeros(qs.size)
    zero = qs == 0
    if zero.any():
        with np.errstate(all="ignore"):
            f0 = float(np.asarray(f(np.zeros(1)), dtype=np.float64).ravel()[0])
        R[zero, 0] = f0
        M[zero] = f0 * f0
    nonzero_kinks = [k for k in kinks if k != 0.0]
    groups: list[tuple[np.ndarray, list[float]]]
    pos = np.flatnonzero(~zero)
    if not nonzero_kinks:
        groups = [(pos, [0.0] if kinks else [])]
    else:  # kinks move with q in g-space: one node set per variance
        groups = [(np.array([i]), [k / np.sqrt(qs[i]) for k in kinks]) for i in pos]
    for idx, brk in groups:
        if idx.size == 0:
            continue
        t, w = nodes_and_weights(degree, brk)
        psi = hermite_functions(t, degree)
        arg = np.sqrt(qs[idx])[:, None] * t[None, :]
        F = _weighted_values(f, arg, w[None, :], t[None, :])
        R[idx] = F @ psi
        # E[f²]: f² e^{−t²/2}/√(2π) = (f e^{−t²/4}/√(2π))·f·e^{−t²/4}
        with np.errstate(all="ignore"):
            fv = np.broadcast_to(np.asarray(f(arg), dtype=np.float64), arg.shape)
            sq = np.where(F == 0.0, 0.0, F * fv * np.exp(-(t[None, :] ** 2) / 4.0))
        M[idx] = sq.sum(axis=1)
        _check_convergence(f, qs[idx], t, M[idx])
    if not (np.all(np.isfinite(R)) and np.all(np.isfinite(M))):
        raise DivergentError("the Gaussian expectation of the activation is not finite "
                             f"at variances {qs[~np.isfinite(M)][:3]}")
    return R, M


def _check_convergence(f, qs: np.ndarray, t: np.ndarray, M: np.ndarray) -> None:
    """Refuse activations whose square is not integrable against the Gaussian.

    The integrand f(√q t)² φ(t) must have decayed to nothing at the end of the
    quadrature range; if it has not, E[f²] diverges (e.g. exp(x²) at q ≥ 1/4).
    """
    L = float(np.max(np.abs(t)))
    ends = np.array([-L, L])
    with np.errstate(all="ignore"):
        fv = np.asarray(f(np.sqrt(qs)[:, None] * ends[None, :]), dtype=np.float64)
        logtail = 2.0 * np.log(np.abs(np.broadcast_to(fv, (qs.size, 2))) + 1e-300) - L * L / 2.0
    scale = np.log(np.maximum(np.abs(M), 1e-300))
    bad = ~np.isfinite(fv).all(axis=1) | (logtail.max(axis=1) - scale > np.log(1e-16))
    bad &= True
    if bad.any():
        raise DivergentError(
            "the Gaussian expectation E[σ(u)²] does not converge: σ grows too fast "
            f"(at variance q = {qs[bad][0]:.4g} the integrand has not decayed at |u| = "
            f"{np.sqrt(qs[bad][0]) * L:.3g})"
        )


def series_nngp(R1: np.ndarray, R2: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Σ_l R1[..., l] R2[..., l] ρ^l by Horner's rule."""
    out = np.zeros(np.broadcast(R1[..., 0], rho).shape)
    for l in range(R1.shape[-1] - 1, -1, -1):
        out = out * rho + R1[..., l] * R2[..., l]
    return out


def series_ntk(R1: np.ndarray, R2: np.ndarray, rho: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Σ_{l≥1} l R1[..., l] R2[..., l] ρ^{l−1} / s  with s = √(q1 q2)."""
    out = np.zeros(np.broadcast(R1[..., 0], rho).shape)
    for l in range(R1.shape[-1] - 1, 0, -1):
        out = out * rho + l * R1[..., l] * R2[..., l]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s > 0, out / np.where(s > 0, s, 1.0), 0.0)


def barycentric(nodes: np.ndarray, values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Barycentric interpolation at Chebyshev points of the 2nd kind (rows of ``values``)."""
    m = nodes.size - 1
    w = (-1.0) ** np.arange(m + 1)
    w[0] *= 0.5
    w[-1] *= 0.5
    diff = x[:, None] - nodes[None, :]
    exact = diff == 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        C = w[None, :] / diff
    hit = exact.any(axis=1)
    C[hit] = exact[hit].astype(np.float64)
    C /= C.sum(axis=1, keepdims=True)
    return C @ values
