r"""Inline, vectorisable math for the generated Numba kernels.

libm's ``acos``/``asin``/``exp`` are opaque calls: a loop that contains one is not
vectorised.  The generated kernels call these instead: straight-line polynomial
code with selects in place of branches, which LLVM's loop vectoriser turns into
SIMD code.  Accuracy (checked in tests/test_codegen.py against mpmath): about one
unit in the last place over the whole domain; acos(1) = 0 and asin(0) = 0 exactly.

* asin/acos: asin(u) = u + u·z·P(z), z = u², on |u| ≤ 1/2; beyond, the half-angle
  identity asin(x) = π/2 − 2·asin(√((1−x)/2)) (no cancellation near ±1).
  P: degree-12 least-squares fit, coefficients from ``python -m codegen._fit_math``.
* exp: Cody–Waite reduction x = k·ln2 + r, |r| ≤ ln2/2, Taylor degree 13, and the
  scale 2^k built from its bits in two halves (no overflow of the exponent field).
"""
from __future__ import annotations

ASIN_P = [0.16666666666666669, 0.0749999999999834, 0.04464285714653523, 0.03038194412500875,
          0.022372173467043486, 0.017352380709839098, 0.01397138708310213, 0.011477517005507167,
          0.01033337215296726, 0.005413184483715509, 0.01751883397953867, -0.015032162599250314,
          0.028878362746452394]

LN2_HI = 0.6931471803691238          # ln 2 split so that k·LN2_HI is exact for |k| < 2^21
LN2_LO = 1.9082149292705877e-10
LOG2E = 1.4426950408889634
EXP_HI = 709.782712893384             # exp overflows above
EXP_LO = -745.1332191019412           # exp underflows to 0 below
PI = 3.141592653589793
HALF_PI = 1.5707963267948966


def _horner(coeffs: list[float], var: str) -> str:
    """c0 + var*(c1 + var*(...)) as text, with full-precision literals."""
    out = repr(float(coeffs[-1]))
    for cf in reversed(coeffs[:-1]):
        out = f"{float(cf)!r} + {var} * ({out})"
    return out


def _exp_taylor() -> list[float]:
    import math

    return [1.0 / math.factorial(k) for k in range(14)]


#: Numba source of each helper, by the name the printer emits.
NUMBA_HELPERS: dict[str, str] = {
    "_asin_core": f'''
@njit(cache=True, error_model="numpy", fastmath={{"contract"}}, inline="always")
def _asin_core(a):
    """(p, big) with p = asin(u): u = |x| if |x| <= 1/2 else sqrt((1 - |x|)/2)."""
    big = a > 0.5
    z = (1.0 - a) * 0.5 if big else a * a
    u = math.sqrt(z) if big else a
    p = u + u * z * ({_horner(ASIN_P, "z")})
    return p, big
''',
    "_asin": f'''
@njit(cache=True, error_model="numpy", fastmath={{"contract"}}, inline="always")
def _asin(x):
    """asin(x) for x clipped to [-1, 1]; polynomial form, vectorisable."""
    a = min(abs(x), 1.0)
    p, big = _asin_core(a)
    r = {HALF_PI!r} - 2.0 * p if big else p
    return math.copysign(r, x)
''',
    "_acos": f'''
@njit(cache=True, error_model="numpy", fastmath={{"contract"}}, inline="always")
def _acos(x):
    """acos(x) for x clipped to [-1, 1]; half-angle form near ±1 (exact 0 at 1)."""
    a = min(abs(x), 1.0)
    p, big = _asin_core(a)
    small = {HALF_PI!r} - math.copysign(p, x)
    large = 2.0 * p if x > 0.0 else {PI!r} - 2.0 * p
    return large if big else small
''',
    "_exp": f'''
@njit(cache=True, error_model="numpy", fastmath={{"contract"}}, inline="always")
def _exp(x):
    """exp(x): Cody-Waite reduction, Taylor degree 13, 2^k from its bits."""
    xc = min(max(x, {EXP_LO!r}), {EXP_HI!r})
    k = math.floor(xc * {LOG2E!r} + 0.5)
    r = (xc - k * {LN2_HI!r}) - k * {LN2_LO!r}
    p = {_horner(_exp_taylor(), "r")}
    k1 = k // 2
    k2 = k - k1
    y = p * bits_to_f64((k1 + 1023) << 52) * bits_to_f64((k2 + 1023) << 52)
    return 0.0 if x < {EXP_LO!r} else (math.inf if x > {EXP_HI!r} else y)
''',
}

#: Helpers a helper needs.
NUMBA_HELPER_DEPS = {"_asin": ["_asin_core"], "_acos": ["_asin_core"], "_exp": []}
