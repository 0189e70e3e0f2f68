"""Regenerate the polynomial coefficients of :mod:`codegen.mathlib` (not imported at run time).

    python -m codegen._fit_math

asin: asin(u) = u + u·z·P(z) with z = u², |u| ≤ 1/2 (so z ∈ [0, 1/4]); P is the
weighted least-squares polynomial (relative weight, 400 Chebyshev points, 40 digits)
of (asin(√z) − √z)/(z√z), whose nearest singularity (z = 1) is far from the interval,
so degree 12 reaches the float64 round-off of the result.
exp: Taylor coefficients 1/k! (exact) on |r| ≤ ln2/2 after Cody–Waite reduction.
"""
from __future__ import annotations

import mpmath as mp


def fit_asin(degree: int = 12, points: int = 400) -> list[float]:
    mp.mp.dps = 40

    def f(z):
        if z == 0:
            return mp.mpf(1) / 6
        s = mp.sqrt(z)
        return (mp.asin(s) - s) / (z * s)

    pts = [mp.mpf(1) / 8 + mp.mpf(1) / 8 * mp.cos(mp.pi * (k + mp.mpf(1) / 2) / points) for k in range(points)]
    # weight: the error of u + u z P(z) relative to asin(u) ≈ u is z·|ΔP|/1, so weight rows by z
    # lightly (plain least squares already puts the largest errors where z is largest).
    A = mp.matrix([[p**j for j in range(degree + 1)] for p in pts])
    b = mp.matrix([f(p) for p in pts])
    coef = mp.lu_solve(A.T * A, A.T * b)
    return [float(v) for v in coef]


if __name__ == "__main__":
    print("ASIN_P =", fit_asin())
