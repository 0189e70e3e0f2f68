"""Exact piecewise polynomial × exp duals (dualcalc.derive.piecewise_exp) and the bivariate
normal CDF they are written in (dualcalc.bvn), against independent references: mpmath
quadrature, the Owen's T identity (scipy.special.owens_t) and the mpmath oracle of
tests/oracle.py."""
import itertools
import os

import mpmath as mp
import numpy as np
import pytest
import scipy.special as ss
import scipy.stats as st

from dualcalc.bvn import Phi2, bvn_cdf, bvn_mp


def _owen(h, k, r):
    """Φ₂(h, k; r) for h, k ≠ 0, |r| < 1 by Owen (1956): ½Φ(h) + ½Φ(k) − T(h, a_h) − T(k, a_k) − β."""
    s = np.sqrt(1 - r * r)
    ah, ak = (k - r * h) / (h * s), (h - r * k) / (k * s)
    beta = np.where(h * k > 0, 0.0, 0.5)
    return 0.5 * st.norm.cdf(h) + 0.5 * st.norm.cdf(k) - ss.owens_t(h, ah) - ss.owens_t(k, ak) - beta


def test_bvn_vs_owens_t_grid():
    vals = np.array([-9, -5, -2.5, -1, -0.3, 0.1, 0.8, 1.7, 4, 7.5])
    rs = np.array([-0.999999, -0.99, -0.93, -0.924, -0.8, -0.5, -0.1, 0, 0.2, 0.6, 0.9, 0.926, 0.995, 0.9999999])
    H, K, R = map(np.ravel, np.meshgrid(vals, vals, rs, indexing="ij"))
    err = np.abs(bvn_cdf(H, K, R) - _owen(H, K, R))
    assert err.max() < 1e-14, (err.max(), H[err.argmax()], K[err.argmax()], R[err.argmax()])


def test_bvn_vs_mpmath_quadrature():
    mp.mp.dps = 25
    pts = [(0.0, 0.0, 0.5), (-0.2, 0.0, 0.926), (1.0, -2.0, -0.95), (-3.0, -3.0, 0.999999),
           (2.0, 2.0, -0.9999999), (-6.0, 1.0, 0.3), (0.5, 0.5, 0.9999999), (-1.0, 3.0, -0.5)]
    for h, k, r in pts:
        ref = float(bvn_mp(h, k, r))
        assert abs(float(bvn_cdf(h, k, r)) - ref) < 1e-14, (h, k, r)


def test_bvn_limits():
    from scipy.stats import norm
    h = np.array([-2.0, 0.3, 1.5])
    k = np.array([0.5, -1.0, 1.5])
    assert np.allclose(bvn_cdf(h, k, 1.0), norm.cdf(np.minimum(h, k)), atol=4e-16, rtol=0)
    assert np.allclose(bvn_cdf(h, k, -1.0), np.maximum(0, norm.cdf(h) - norm.cdf(-k)), atol=4e-16, rtol=0)
    # continuity towards |r| = 1
    assert np.allclose(bvn_cdf(h, k, 1 - 1e-13), bvn_cdf(h, k, 1.0), atol=1e-7)
    assert np.allclose(bvn_cdf(np.inf, k, 0.4), norm.cdf(k), atol=4e-16, rtol=0)
    assert np.all(bvn_cdf(-np.inf, k, 0.4) == 0)
    assert np.isnan(bvn_cdf(np.nan, 0.0, 0.1))
    # symmetric Φ₂(0, 0; r) = 1/4 + arcsin(r)/(2π)
    r = np.linspace(-0.999, 0.999, 41)
    assert np.abs(bvn_cdf(0.0, 0.0, r) - (0.25 + np.arcsin(r) / (2 * np.pi))).max() < 1e-15


def test_phi2_sympy_lambdify_and_evalf():
    import sympy as sp
    h, k, r = sp.symbols("h k r")
    f = sp.lambdify([h, k, r], Phi2(h, k, r), modules="numpy")
    H = np.array([-1.0, 0.2, 2.0])
    assert np.abs(f(H, 0.3, 0.4) - bvn_cdf(H, 0.3, 0.4)).max() == 0
    assert abs(float(Phi2(sp.Rational(1, 3), -1, sp.Rational(1, 2)).evalf(20))
               - float(_owen(np.float64(1 / 3), np.float64(-1.0), 0.5))) < 1e-14
    assert Phi2(sp.oo, k, r).has(sp.erfc) and Phi2(-sp.oo, k, r) == 0
