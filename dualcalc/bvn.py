r"""The bivariate normal CDF Φ₂(h, k; r) = P(X < h, Y < k), (X, Y) standard normal with
correlation r — numerically (vectorised NumPy) and as a SymPy function.

Numerics (Genz 2004, "Numerical computation of rectangular bivariate and trivariate
normal and t probabilities", Statistics and Computing 14:251–260).  With the upper
probability L(h, k; r) = P(X > h, Y > k) = Φ₂(−h, −k; r):

* |r| < 0.925: Drezner & Wesolowsky's form, Gauss–Legendre on θ ∈ (0, arcsin r),

      L = Φ(−h)Φ(−k) + (1/2π) ∫₀^{arcsin r} exp(−(h² + k² − 2hk sin θ)/(2cos²θ)) dθ

  (6, 12 or 20 nodes for |r| < 0.3, < 0.75, else — the node count is what brings
  the error to ~1e-16);
* 0.925 ≤ |r| < 1: the integral in x = √(1 − r²) form, with its singular part
  (an elementary term with Φ) subtracted and the rest by 20-point Gauss–Legendre,
  then L = Φ(−max(h, k)) − …  (r > 0) or the reflected form (r < 0);
* |r| = 1 exactly: Φ₂(h, k; 1) = Φ(min(h, k)), Φ₂(h, k; −1) = max(0, Φ(h) − Φ(−k));
* infinite limits: Φ₂(+∞, k) = Φ(k), Φ₂(−∞, k) = 0 (and symmetrically).

Absolute error ≲ 1e-15 (tests/test_piecewise.py checks ≤ 1e-14 against mpmath quadrature
and the ``scipy.special.owens_t`` identity, |r| → 1 and tails included).  The error is
absolute, not relative: probabilities far below 1e-16 (e.g. Φ₂(−3, −3; −0.5) ≈ 7e-11) carry
an error ~1e-16 in absolute terms.

The SymPy function :class:`Phi2` carries Φ₂ inside dual expressions: lambdify evaluates
it with :func:`bvn_cdf` (its ``_imp_``), derivatives are the textbook ones, the code
printers of ``codegen/`` print it inline (codegen/mathlib.py holds the scalar version).
"""
from __future__ import annotations

import math

import numpy as np
import scipy.special
import sympy as sp

#: Gauss–Legendre rules (all nodes on (−1, 1)) by size.
_GL = {n: np.polynomial.legendre.leggauss(n) for n in (6, 12, 20, 40, 64, 96)}
_TWO_PI = 2.0 * math.pi
_SQRT_TWO_PI = math.sqrt(_TWO_PI)


def _Phi(t):
    """Standard normal CDF, accurate relative to its size in the lower tail."""
    return 0.5 * scipy.special.erfc(-t / math.sqrt(2.0))


def _upper_dw(h, k, r, nmin=20):
    """L(h, k; r) for |r| < 0.925 (Drezner–Wesolowsky form)."""
    out = np.empty_like(h)
    ar = np.abs(r)
    for n, sel in ((6, ar < 0.3), (12, (ar >= 0.3) & (ar < 0.75)), (20, ar >= 0.75)):
        if nmin > n:
            n = nmin
        if not sel.any():
            continue
        x, w = _GL[n]
        hh, kk, rr = h[sel, None], k[sel, None], r[sel, None]
        hk = hh * kk
        hs = (hh * hh + kk * kk) / 2
        asr = np.arcsin(rr) / 2
        sn = np.sin(asr * (1 + x))
        s = np.sum(w * np.exp((sn * hk - hs) / (1 - sn * sn)), axis=1)
        out[sel] = s * asr[:, 0] / _TWO_PI + _Phi(-h[sel]) * _Phi(-k[sel])
    return out


def _upper_high(h, k, r, n=20):
    """L(h, k; r) for 0.925 ≤ |r| < 1 (Genz's second form)."""
    x, w = _GL[n]
    neg = r < 0
    k = np.where(neg, -k, k)
    hk = h * k
    As = (1 - r) * (1 + r)
    a = np.sqrt(As)
    bs = (h - k) ** 2
    asr = -(bs / As + hk) / 2
    cc = (4 - hk) / 8
    d = (12 - hk) / 80
    bvn = a * np.exp(asr) * (1 - cc * (bs - As) * (1 - d * bs) / 3 + cc * d * As * As)
    b = np.sqrt(bs)
    # exp(−hk/2)·√(2π)·Φ(−b/a), with the exponents combined (no overflow for hk ≪ 0)
    bvn = bvn - _SQRT_TWO_PI * np.exp(-hk / 2 + scipy.special.log_ndtr(-b / a)) * b * (1 - cc * bs * (1 - d * bs) / 3)
    ah = (a / 2)[:, None]
    xs = (ah + ah * x) ** 2
    rs = np.sqrt(1 - xs)
    e = -(bs[:, None] / xs + hk[:, None]) / 2
    sp_ = 1 + cc[:, None] * xs * (1 + 5 * d[:, None] * xs)
    ep = np.exp(e - (hk[:, None] / 2) * xs / (1 + rs) ** 2) / rs
    bvn = bvn + np.sum(ah * w * (ep - np.exp(e) * sp_), axis=1)
    bvn = -bvn / _TWO_PI
    pos = ~neg
    out = np.empty_like(h)
    out[pos] = bvn[pos] + _Phi(-np.maximum(h[pos], k[pos]))
    hn, kn, bn = h[neg], k[neg], bvn[neg]
    L = np.where(hn < 0, _Phi(kn) - _Phi(hn), _Phi(-hn) - _Phi(-kn))
    out[neg] = np.where(hn >= kn, -bn, L - bn)
    return out


def bvn_upper(h, k, r) -> np.ndarray:
    """L(h, k; r) = P(X > h, Y > k) for standard normals with correlation r (broadcast, float64)."""
    h, k, r = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (h, k, r)))
    shape = h.shape
    h, k, r = (np.ravel(v).copy() for v in (h, k, r))
    out = np.full(h.shape, np.nan)
    with np.errstate(all="ignore"):
        ok = ~(np.isnan(h) | np.isnan(k) | np.isnan(r))
        # infinite limits: L(+∞, ·) = 0, L(−∞, k) = Φ(−k)
        inf = ok & (np.isinf(h) | np.isinf(k))
        out[inf & ((h == np.inf) | (k == np.inf))] = 0.0
        m = inf & (h == -np.inf) & (k != np.inf)
        out[m] = _Phi(-k[m])
        m = inf & (k == -np.inf) & (h != np.inf) & (h != -np.inf)
        out[m] = _Phi(-h[m])
        fin = ok & ~inf
        rc = np.clip(r, -1.0, 1.0)
        one = fin & (rc >= 1.0)
        out[one] = _Phi(-np.maximum(h[one], k[one]))
        mone = fin & (rc <= -1.0)
        hm, km = h[mone], k[mone]                       # P(h < X < −k)
        out[mone] = np.maximum(0.0, np.where(hm < 0, _Phi(-km) - _Phi(hm), _Phi(-hm) - _Phi(km)))
        low = fin & (np.abs(rc) < 0.925)
        if low.any():
            out[low] = _upper_dw(h[low], k[low], rc[low])
        high = fin & (np.abs(rc) >= 0.925) & (np.abs(rc) < 1.0)
        if high.any():
            out[high] = _upper_high(h[high], k[high], rc[high])
        out = np.where(ok, np.clip(out, 0.0, 1.0), np.nan)
    return out.reshape(shape)


def bvn_cdf(h, k, r) -> np.ndarray:
    """Φ₂(h, k; r) = P(X < h, Y < k) for standard normals with correlation r (broadcast, float64)."""
    return bvn_upper(-np.asarray(h, dtype=np.float64), -np.asarray(k, dtype=np.float64), r)


def _Phi_sym(t):
    """Φ(t) = erfc(−t/√2)/2 with the argument behind Max(·, −30) (exact: erfc(−30) is 2 in double).
    Without it SymPy rewrites erfc(−s) as 2 − erfc(s) whenever s *looks* negative, and 2 − erfc
    loses a lower-tail Φ to rounding; no later rebuild of the tree can undo the guard."""
    return sp.erfc(sp.Max(-t / sp.sqrt(2), -30)) / 2


def _phi_sym(t):
    return sp.exp(-t**2 / 2) / sp.sqrt(2 * sp.pi)


class Phi2(sp.Function):
    r"""Φ₂(h, k; r) = P(X < h, Y < k), (X, Y) standard bivariate normal with correlation r.

    Infinite limits reduce to Φ (or 0) on construction.  ∂/∂h = φ(h)Φ((k − rh)/√(1 − r²)),
    ∂/∂k likewise, ∂/∂r = φ₂(h, k; r) (Plackett's identity).  Evaluated numerically by
    :func:`bvn_cdf` (lambdify uses it through ``_imp_``) and by mpmath quadrature in evalf.
    """

    nargs = 3
    _imp_ = staticmethod(bvn_cdf)

    @classmethod
    def eval(cls, h, k, r):
        if h is sp.S.NegativeInfinity or k is sp.S.NegativeInfinity:
            return sp.S.Zero
        if h is sp.S.Infinity:
            return _Phi_sym(k)
        if k is sp.S.Infinity:
            return _Phi_sym(h)
        return None

    def fdiff(self, argindex=1):
        h, k, r = self.args
        s = sp.sqrt((1 - r) * (1 + r))
        if argindex == 1:
            return _phi_sym(h) * _Phi_sym((k - r * h) / s)
        if argindex == 2:
            return _phi_sym(k) * _Phi_sym((h - r * k) / s)
        if argindex == 3:
            return sp.exp(-(h**2 - 2 * r * h * k + k**2) / (2 * s**2)) / (2 * sp.pi * s)
        raise sp.ArgumentIndexError(self, argindex)

    def _eval_evalf(self, prec):
        vals = [a.evalf(prec) for a in self.args]
        if not all(v.is_number and v.is_real for v in vals):
            return None
        import mpmath

        with mpmath.workprec(prec + 20):
            h, k, r = (mpmath.mpf(str(v)) for v in vals)
            out = bvn_mp(h, k, r)
        return sp.Float(out, precision=prec)


def bvn_mp(h, k, r, mpmath_module=None):
    """Φ₂(h, k; r) by mpmath quadrature at the current precision:
    ∫_{−∞}^{h} φ(x) Φ((k − r x)/√(1 − r²)) dx (|r| < 1), exact forms at |r| = 1."""
    import mpmath as mpm

    h, k, r = mpm.mpf(h), mpm.mpf(k), mpm.mpf(r)
    Phi = mpm.ncdf
    if r >= 1:
        return Phi(min(h, k))
    if r <= -1:
        return max(mpm.mpf(0), Phi(h) - Phi(-k))
    s = mpm.sqrt((1 - r) * (1 + r))
    # t = h − y, y > 0: the integrand is largest at y = 0 and decays like e^{h y − y²/2}
    f = lambda y: mpm.npdf(h - y) * Phi((k - r * (h - y)) / s)  # noqa: E731
    pts = {mpm.mpf(0), mpm.mpf(1), mpm.mpf(4), mpm.mpf(16)}
    if h < 0:
        pts |= {1 / -h, 4 / -h}
    if r != 0 and h - k / r > 0:
        pts.add(h - k / r)                          # where the inner Φ changes regime
    return mpm.quad(f, sorted(pts) + [mpm.inf])


__all__ = ["Phi2", "bvn_cdf", "bvn_upper", "bvn_mp"]
