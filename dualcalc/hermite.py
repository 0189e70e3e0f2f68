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
    """Largest integration half-width in g-space: beyond the last turning point 2√l of h_l.

    :func:`coefficient_table` integrates over less where σ(√q t)²φ(t) has decayed (the
    Hermite functions ψ_l are bounded by ~1.1, so the rest is below √(that tail))."""
    return 14.0 + 2.0 * np.sqrt(max(degree, 1))


def panel_width(degree: int, q_max: float = 1.0) -> float:
    """Width of the Gauss–Legendre panels: ψ_l oscillates with frequency ≈ √l, so the
    panels shrink like 32/√degree (24 nodes then see < 3 oscillations per panel); and
    σ(√q t) varies on the scale 1/√q in t (tanh's poles at t = ±iπ/(2√q)), so they are
    at most 1/√q_max wide (24 nodes on a panel whose half-width is a third of the distance
    to the nearest complex singularity integrate to ~1e-25)."""
    return min(1.0, 32.0 / np.sqrt(max(degree, 1)), 1.0 / np.sqrt(max(q_max, 1e-300)))


def nodes_and_weights(degree: int, breakpoints: Sequence[float] = (),
                      half: float | None = None, q_max: float = 1.0,
                      h: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nodes t_j and weights w_j with Σ w_j f(t_j) ≈ ∫ f(t) dt on [−L, L].

    L = ``half`` (default :func:`half_width`); panel edges are the multiples of ``h``
    (default :func:`panel_width`) in range plus the breakpoints (kinks, in g-space).
    """
    L = half_width(degree) if half is None else float(half)
    h = panel_width(degree, q_max) if h is None else float(h)
    n = int(np.ceil(L / h))
    edges = set((h * np.arange(-n, n + 1)).tolist())
    for b in breakpoints:
        if -L < b < L:
            edges.add(float(b))
    e = np.array(sorted(edges))
    e = e[np.concatenate([[True], np.diff(e) > 1e-14])]
    a, b = e[:-1, None], e[1:, None]
    hw = (b - a) / 2
    t = (a + b) / 2 + hw * _GL[0][None, :]
    w = hw * _GL[1][None, :]
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


#: Beyond |t| = _FAR the Gaussian weight φ(t) is below 1e-305: a σ that overflows float64
#: there (cosh(x) inside log(cosh(x)), exp(x) inside log(1 + exp(x))) is not thereby divergent;
#: such values are dropped and :func:`_check_convergence` decides from the finite ones.
_FAR = 37.5


def _sigma_values(f: Callable[[np.ndarray], np.ndarray], arg: np.ndarray, t: np.ndarray) -> np.ndarray:
    """f(arg) broadcast to arg's shape, with non-finite values at |t| > _FAR replaced by 0."""
    with np.errstate(all="ignore"):
        fv = np.array(np.broadcast_to(np.asarray(f(arg), dtype=np.float64), arg.shape))
    far = ~np.isfinite(fv) & (np.abs(np.broadcast_to(t, arg.shape)) > _FAR)
    fv[far] = 0.0
    return fv


def _weighted_values(fv: np.ndarray, w: np.ndarray, t: np.ndarray) -> np.ndarray:
    """f·w·e^{−t²/4}/√(2π) from the values fv = f(arg), with 0 where the weight vanishes
    (no inf·0 = NaN)."""
    with np.errstate(all="ignore"):
        g = w * np.exp(-(t**2) / 4.0) / _SQRT_2PI
        val = fv * g
    return np.where(g == 0.0, 0.0, val)


#: Where the integrand σ(√q t)²φ(t) of E[σ²] has fallen below this fraction of E[σ²], the
#: rest of the range is dropped: by Cauchy–Schwarz (|ψ_l| ≲ 1.1) each r_l then changes by
#: less than ~1e-15·√E[σ²].
_RANGE_TAIL = 1e-32


def _effective_half_width(f, qs: np.ndarray, degree: int) -> float:
    """Half-width of the quadrature range for variances ``qs``: the largest |t| where
    σ(√q t)²φ(t) exceeds _RANGE_TAIL·E[σ²] (probed on a grid of step 1/4), plus 2,
    at least 16 and at most :func:`half_width` (where σ does not decay, e.g. a divergent
    E[σ²], the full range is kept and :func:`_check_convergence` decides)."""
    base = half_width(degree)
    tp = np.arange(0.0, base + 0.25, 0.25)
    tt = np.concatenate([-tp[::-1], tp[1:]])
    arg = np.sqrt(qs)[:, None] * tt[None, :]
    fv = _sigma_values(f, arg, tt[None, :])
    with np.errstate(all="ignore"):
        integrand = fv * fv * np.exp(-(tt[None, :] ** 2) / 2.0)
    integrand = np.where(np.isfinite(integrand), integrand, np.inf)
    m0 = np.sum(np.where(np.isfinite(integrand), integrand, 0.0), axis=1) * 0.25 / _SQRT_2PI
    big = integrand > _RANGE_TAIL * np.maximum(m0, 1e-300)[:, None]
    if not big.any():
        return 16.0
    T = float(np.max(np.abs(np.broadcast_to(tt, big.shape)[big])))
    return float(min(base, max(16.0, T + 2.0)))


def _project(F: np.ndarray, t: np.ndarray, degree: int, block: int = 256) -> np.ndarray:
    """F @ Ψ with Ψ[j, l] = ψ_l(t_j), l = 0..degree, without holding Ψ whole: the
    recurrence of :func:`hermite_functions` runs once, ``block`` degrees at a time.

    The overflow test runs every 8 steps: one step multiplies |ψ| by at most ~|t| + 1
    (≤ 300 on any range used), so 8 steps past 1e100 stay far below 1e308."""
    t = np.asarray(t, dtype=np.float64)
    out = np.empty((F.shape[0], degree + 1))
    buf = np.empty((min(block, degree + 1), t.size))  # rows: contiguous writes
    logscale = -(t**2) / 4.0
    prev = np.zeros_like(t)
    cur = np.ones_like(t)
    tmp = np.empty_like(t)
    ls = np.arange(degree + 1, dtype=np.float64)
    inv_root = 1.0 / np.sqrt(np.maximum(ls, 1.0))
    ratio = np.sqrt(np.maximum(ls - 1.0, 0.0)) * inv_root
    l0 = 0
    with np.errstate(under="ignore", over="ignore"):
        scale = np.exp(np.minimum(logscale, 700.0))  # recomputed only when the recurrence rescales
        for l in range(degree + 1):
            if l > 0:
                # ψ_l ∝ (t ψ_{l−1} − √(l−1) ψ_{l−2}) / √l, in place (prev becomes the new value)
                np.multiply(t, cur, out=tmp)
                tmp *= inv_root[l]
                prev *= -ratio[l]
                prev += tmp
                prev, cur = cur, prev
                if l % 8 == 0:
                    big = np.abs(cur) > 1e100
                    if big.any():
                        sc = np.where(big, np.abs(cur), 1.0)
                        cur /= sc
                        prev /= sc
                        logscale = logscale + np.log(sc)
                        scale = np.exp(np.minimum(logscale, 700.0))
            np.multiply(cur, scale, out=buf[l - l0])
            if l - l0 + 1 == buf.shape[0] or l == degree:
                out[:, l0:l + 1] = F @ buf[: l - l0 + 1].T
                l0 = l + 1
    return out


#: Largest (rows × nodes) of the block-diagonal weight matrix built to project several node
#: sets with one recurrence (:func:`_project_groups`).
_MERGE_ENTRIES = 1 << 22


def _project_groups(pending, degree: int, R: np.ndarray, merge: bool) -> None:
    """R[idx] = F @ Ψ(t) for each (idx, t, F), several node sets at a time: the nodes are
    concatenated and F placed block-diagonally, so the Python-level recurrence over the
    degree runs once per batch instead of once per node set (``merge``; without it, one
    projection per node set: cheaper for many one-variance sets at low degree)."""
    if not merge:
        for idx, t, F in pending:
            R[idx] = _project(F, t, degree)
        return
    i = 0
    while i < len(pending):
        j, rows, cols = i, 0, 0
        while j < len(pending) and (j == i or (rows + pending[j][0].size) * (cols + pending[j][1].size)
                                    <= _MERGE_ENTRIES):
            rows += pending[j][0].size
            cols += pending[j][1].size
            j += 1
        if j == i + 1:
            idx, t, F = pending[i]
            R[idx] = _project(F, t, degree)
        else:
            big = np.zeros((rows, cols))
            r0 = c0 = 0
            for idx, t, F in pending[i:j]:
                big[r0:r0 + idx.size, c0:c0 + t.size] = F
                r0, c0 = r0 + idx.size, c0 + t.size
            out = _project(big, np.concatenate([p[1] for p in pending[i:j]]), degree)
            R[np.concatenate([p[0] for p in pending[i:j]])] = out
        i = j


def coefficient_table(
    f: Callable[[np.ndarray], np.ndarray],
    degree: int,
    q: np.ndarray | float,
    kinks: Sequence[float] = (),
    *,
    fine: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Hermite coefficients r_l(q) and second moments E[f(√q g)²].

    Returns ``(R, M)`` with ``R[i, l] = r_l(q_i)`` (shape (len(q), degree+1)) and
    ``M[i] = E[f(√q_i g)²]``.  ``kinks`` are the points (in x) where f is not
    smooth; q = 0 gives r_0 = f(0), r_l = 0 for l ≥ 1.

    Two quadratures.  The default (``fine=False``) uses unit-width panels on
    [−:func:`half_width`, +:func:`half_width`]: cheap, and accurate to ~1e-12 for smooth σ
    at q ≲ 10 and moderate degree — what callers needing a few coefficients at many
    variances (the sketch's coefficient tables, ``act.hermite``) use.  ``fine=True``
    (the :class:`~dualcalc.dual.HermiteSeries` of a dual, whose k and k̇ must meet 1e-9 up to
    q = 100 and degree 16384) uses panels of :func:`panel_width` — ≤ 32/√degree and
    ≤ 1/√q for each variance, the variances grouped by factors of 4 so a large q does
    not refine the panels of the small ones — over the range where σ²φ has not decayed
    (:func:`_effective_half_width`).  Both drop float64 overflow of σ far out
    (:func:`_sigma_values`).
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
        brk0 = [0.0] if kinks else []
        if fine:  # panels ≤ 1/√q: one node set per factor 4 in q (all q ≤ 1 share unit-scale panels)
            band = np.ceil(np.log(np.maximum(qs[pos], 1.0)) / np.log(4.0))
            groups = [(pos[band == b], brk0) for b in np.unique(band)]
        else:
            groups = [(pos, brk0)]
    else:  # kinks move with q in g-space: one node set per variance
        groups = [(np.array([i]), [k / np.sqrt(qs[i]) for k in kinks]) for i in pos]
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (idx, t, F) awaiting projection
    for idx, brk in groups:
        if idx.size == 0:
            continue
        if fine:
            t, w = nodes_and_weights(degree, brk, half=_effective_half_width(f, qs[idx], degree),
                                     q_max=float(qs[idx].max()))
        else:
            t, w = nodes_and_weights(degree, brk, h=1.0)
        arg = np.sqrt(qs[idx])[:, None] * t[None, :]
        fv = _sigma_values(f, arg, t[None, :])
        F = _weighted_values(fv, w[None, :], t[None, :])
        pending.append((idx, t, F))
        # E[f²]: f² e^{−t²/2}/√(2π) = (f e^{−t²/4}/√(2π))·f·e^{−t²/4}
        with np.errstate(all="ignore"):
            sq = np.where(F == 0.0, 0.0, F * fv * np.exp(-(t[None, :] ** 2) / 4.0))
        M[idx] = sq.sum(axis=1)
        _check_convergence(f, qs[idx], t, M[idx])
    _project_groups(pending, degree, R, merge=fine)
    if not (np.all(np.isfinite(R)) and np.all(np.isfinite(M))):
        raise DivergentError("the Gaussian expectation of the activation is not finite "
                             f"at variances {qs[~np.isfinite(M)][:3]}")
    return R, M


def _check_convergence(f, qs: np.ndarray, t: np.ndarray, M: np.ndarray) -> None:
    """Refuse activations whose square is not integrable against the Gaussian.

    The integrand f(√q t)² φ(t) must have decayed to nothing at the end of the
    quadrature range; if it has not, E[f²] diverges (e.g. exp(x²) at q ≥ 1/4).
    Where f overflows float64 near the ends (log(cosh(x)) at q ≳ 100: cosh(x) = inf
    for |x| > 710), the test is made at the outermost points t_f where f is finite
    (on a grid of 400 points down to |t| = _FAR): log(f² φ) there must be negligible
    and decreasing outwards (a Gaussian-dominated tail), as it is for any σ growing
    slower than e^{x²/(4q)}.
    """
    L = float(np.max(np.abs(t)))
    s = np.sqrt(qs)[:, None]
    scale = np.log(np.maximum(np.abs(M), 1e-300))
    tiny = np.log(1e-16)
    bad = np.zeros(qs.size, dtype=bool)
    grid = np.linspace(L, min(_FAR, L), 400) if L > _FAR else np.array([L])
    for sgn in (-1.0, 1.0):
        tt = sgn * grid
        with np.errstate(all="ignore"):
            fv = np.broadcast_to(np.asarray(f(s * tt[None, :]), dtype=np.float64), (qs.size, tt.size))
            logI = 2.0 * np.log(np.abs(fv) + 1e-300) - tt[None, :] ** 2 / 2.0
        finite = np.isfinite(fv)
        first = np.argmax(finite, axis=1)  # outermost finite point (0 when f is finite at the end)
        none = ~finite.any(axis=1)
        rows = np.arange(qs.size)
        at = logI[rows, first]
        inner = logI[rows, np.minimum(first + 1, tt.size - 1)]
        grows = (first > 0) & (at > inner)  # overflowed beyond t_f, and the integrand still rising
        bad |= none | (at - scale > tiny) | grows
    if bad.any():
        q0 = qs[bad][0]
        raise DivergentError(
            "the Gaussian expectation E[σ(u)²] does not converge: σ grows too fast "
            f"(at variance q = {q0:.4g} the integrand has not decayed at |u| = {np.sqrt(q0) * L:.3g})"
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
