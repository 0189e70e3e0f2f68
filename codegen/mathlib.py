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


# ------------------------------------------------------------------------------------------------
# Φ₂(h, k; r): the bivariate normal CDF, scalar, for the piecewise-exponential duals.
#
# The algorithm of dualcalc/bvn.py (Genz 2004, Statistics and Computing 14:251–260), written
# for one point.  With the upper probability L(h, k; r) = P(X > h, Y > k) = Φ₂(−h, −k; r):
#   |r| < 0.925  Drezner–Wesolowsky: L = Φ(−h)Φ(−k) + (1/2π)∫₀^{asin r} exp(−(h²+k²−2hk sinθ)/(2cos²θ)) dθ,
#                Gauss–Legendre with 6 / 12 / 20 nodes for |r| < 0.3 / < 0.75 / else;
#   |r| ≥ 0.925  the √(1−r²) form with its singular part subtracted in closed form, 20 nodes;
#   |r| = 1      Φ(min(h, k)) and max(0, Φ(h) − Φ(−k)), exact.
# Two deviations from a literal port, both for the generated kernels:
# * the sines of the Drezner–Wesolowsky nodes depend on |r| only (the sign of r goes into hk),
#   so the Φ₂ calls of one dual — all at correlation ±ρ — share them once inlined;
# * h and k are clipped to ±40 first: Φ(−40) ≈ 4e−350 underflows, so Φ₂ is unchanged in
#   double (and float) precision, and ±∞ limits need no branch of their own.
# Φ is 0.5·erfc(−t/√2) (accurate relative to its size in the lower tail), as in bvn.py.
# Absolute error ≲ 1e−15 in double (tests/test_codegen_bvn.py: against bvn_cdf, Owen's T and mpmath).

#: Gauss–Legendre nodes and weights on (−1, 1) (numpy.polynomial.legendre.leggauss), by size.
GL_NODES = {
    6: ([-0.9324695142031519, -0.6612093864662645, -0.2386191860831969, 0.2386191860831969,
         0.6612093864662645, 0.9324695142031519],
        [0.17132449237917027, 0.3607615730481387, 0.46791393457269104, 0.46791393457269104,
         0.3607615730481387, 0.17132449237917027]),
    12: ([-0.9815606342467192, -0.9041172563704748, -0.7699026741943047, -0.5873179542866175,
          -0.3678314989981802, -0.1252334085114689, 0.1252334085114689, 0.3678314989981802,
          0.5873179542866175, 0.7699026741943047, 0.9041172563704748, 0.9815606342467192],
         [0.04717533638651141, 0.10693932599531907, 0.16007832854334642, 0.20316742672306573,
          0.2334925365383546, 0.2491470458134027, 0.2491470458134027, 0.2334925365383546,
          0.20316742672306573, 0.16007832854334642, 0.10693932599531907, 0.04717533638651141]),
    20: ([-0.993128599185095, -0.9639719272779138, -0.912234428251326, -0.8391169718222188,
          -0.7463319064601508, -0.636053680726515, -0.5108670019508271, -0.37370608871541955,
          -0.22778585114164507, -0.07652652113349734, 0.07652652113349734, 0.22778585114164507,
          0.37370608871541955, 0.5108670019508271, 0.636053680726515, 0.7463319064601508,
          0.8391169718222188, 0.912234428251326, 0.9639719272779138, 0.993128599185095],
         [0.017614007139150893, 0.040601429800386446, 0.06267204833410879, 0.08327674157670471,
          0.1019301198172407, 0.1181945319615186, 0.1316886384491769, 0.1420961093183824,
          0.14917298647260424, 0.15275338713072628, 0.15275338713072628, 0.14917298647260424,
          0.1420961093183824, 0.1316886384491769, 0.1181945319615186, 0.1019301198172407,
          0.08327674157670471, 0.06267204833410879, 0.040601429800386446, 0.017614007139150893]),
}
BVN_HIGH_R = 0.925   # |r| from which the √(1−r²) form is used
BVN_CLIP = 40.0      # |h|, |k| beyond this do not change Φ₂ in double precision
TWO_PI = 6.283185307179586
SQRT_TWO_PI = 2.5066282746310002
INV_SQRT2 = 0.7071067811865476


class _Lang:
    """The few spellings that differ between the Numba and CUDA renderings of Φ₂."""

    def __init__(self, target: str, precision: str = "double"):
        self.target, self.precision = target, precision
        self.f = "f" if (target == "cuda" and precision == "float") else ""

    def lit(self, v: float) -> str:
        if self.target == "numba" or self.precision == "double":
            return repr(float(v))
        s = f"{float(v):.9g}"
        return (s if any(ch in s for ch in ".e") else s + ".0") + "f"

    def fn(self, name: str) -> str:
        return f"math.{name}" if self.target == "numba" else name + self.f

    def decl(self, name: str, value: str) -> str:
        if self.target == "numba":
            return f"{name} = {value}"
        return f"const {self.precision} {name} = {value};"


def _dw_sum(lg: _Lang, n: int, ind: str) -> list[str]:
    """Σ_i w_i exp((sn_i·hk − hs)/(1 − sn_i²)), sn_i = sin(asr·(1 + x_i)), unrolled."""
    xs, ws = GL_NODES[n]
    out = []
    acc = []
    for i, (xv, wv) in enumerate(zip(xs, ws)):
        out.append(ind + lg.decl(f"sn{i}", f"{lg.fn('sin')}(asr * {lg.lit(1.0 + xv)})"))
        acc.append(f"{lg.lit(wv)} * {lg.fn('exp')}((sn{i} * hk - hs) / ({lg.lit(1.0)} - sn{i} * sn{i}))")
    # pairwise-ish: a balanced sum keeps the dependency chain short
    while len(acc) > 1:
        acc = [f"({acc[j]} + {acc[j + 1]})" if j + 1 < len(acc) else acc[j] for j in range(0, len(acc), 2)]
    out.append(ind + ("s = " if lg.target == "numba" else "s = ") + acc[0] + ("" if lg.target == "numba" else ";"))
    return out


def _high_sum(lg: _Lang, ind: str) -> list[str]:
    """Σ_i w_i (exp(e_i − (hk/2)·xs_i/(1 + rs_i)²)/rs_i − exp(e_i)·(1 + cc·xs_i·(1 + 5d·xs_i)))."""
    xs, ws = GL_NODES[20]
    out, acc = [], []
    one = lg.lit(1.0)
    for i, (xv, wv) in enumerate(zip(xs, ws)):
        out.append(ind + lg.decl(f"x{i}", f"(ah * {lg.lit(1.0 + xv)}) * (ah * {lg.lit(1.0 + xv)})"))
        out.append(ind + lg.decl(f"r{i}", f"{lg.fn('sqrt')}({one} - x{i})"))
        out.append(ind + lg.decl(f"e{i}", f"-(bs / x{i} + hk) * {lg.lit(0.5)}"))
        acc.append(f"{lg.lit(wv)} * ({lg.fn('exp')}(e{i} - hk2 * x{i} / (({one} + r{i}) * ({one} + r{i}))) / r{i}"
                   f" - {lg.fn('exp')}(e{i}) * ({one} + cc * x{i} * ({one} + d5 * x{i})))")
    while len(acc) > 1:
        acc = [f"({acc[j]} + {acc[j + 1]})" if j + 1 < len(acc) else acc[j] for j in range(0, len(acc), 2)]
    out.append(ind + "s = " + acc[0] + ("" if lg.target == "numba" else ";"))
    return out


_NJIT = '@njit(cache=True, error_model="numpy", fastmath={"contract"}, inline="always")'
# Φ₂ is called, not inlined: a dual holds tens of Φ₂ calls, and inlining each copy made one
# ELU network take ~15 min to compile on 2 cores (LLVM on the unrolled Gauss–Legendre sums).
_NJIT_CALL = '@njit(cache=True, error_model="numpy", fastmath={"contract"})'


def _numba_phi2() -> dict[str, str]:
    lg = _Lang("numba")
    L = lg.lit
    dw = ["", _NJIT_CALL, "def _phi2_dw(hk, hs, ar):",
          '    """Σ w_i exp((sn_i hk − hs)/(1 − sn_i²)) · asin(ar)/(4π): the Drezner–Wesolowsky integral."""',
          f"    asr = {lg.fn('asin')}(ar) * 0.5",
          f"    if ar < 0.3:"]
    dw += _dw_sum(lg, 6, "        ")
    dw += ["    elif ar < 0.75:"]
    dw += _dw_sum(lg, 12, "        ")
    dw += ["    else:"]
    dw += _dw_sum(lg, 20, "        ")
    dw += [f"    return s * asr * {L(1.0 / TWO_PI)}", ""]
    high = ["", _NJIT_CALL, "def _phi2_high(h, k, r):",
            '    """L(h, k; r) = P(X > h, Y > k) for 0.925 <= |r| < 1 (Genz\'s second form)."""',
            "    neg = r < 0.0",
            "    k = -k if neg else k",
            "    hk = h * k",
            "    As = (1.0 - r) * (1.0 + r)",
            "    a = math.sqrt(As)",
            "    bs = (h - k) * (h - k)",
            "    cc = (4.0 - hk) * 0.125",
            "    d = (12.0 - hk) * 0.0125",
            "    bvn = a * math.exp(-(bs / As + hk) * 0.5) * (1.0 - cc * (bs - As) * (1.0 - d * bs) / 3.0"
            " + cc * d * As * As)",
            "    b = math.sqrt(bs)",
            "    # exp(-hk/2) * Phi(-b/a) with the exponents combined (no overflow for hk << 0)",
            f"    lphi = math.log(0.5 * math.erfc(b / a * {L(INV_SQRT2)}))",
            f"    bvn -= {L(SQRT_TWO_PI)} * math.exp(-hk * 0.5 + lphi) * b * (1.0 - cc * bs * (1.0 - d * bs) / 3.0)",
            "    ah = a * 0.5",
            "    hk2 = hk * 0.5",
            "    d5 = 5.0 * d"]
    high += _high_sum(lg, "    ")
    high += ["    bvn = -(bvn + ah * s) / " + L(TWO_PI),
             f"    if not neg:",
             f"        return bvn + _ncdf(-max(h, k))",
             "    if h >= k:",
             "        return -bvn",
             "    lo = _ncdf(k) - _ncdf(h) if h < 0.0 else _ncdf(-h) - _ncdf(-k)",
             "    return lo - bvn", ""]
    top = ["", _NJIT_CALL, "def _phi2(h, k, r):",
           '    """Phi2(h, k; r) = P(X < h, Y < k), standard normals with correlation r (Genz 2004;',
           '    codegen/mathlib.py).  r is clipped to [-1, 1]; NaN in, NaN out."""',
           "    bad = (h != h) or (k != k) or (r != r)",
           f"    hu = min(max(-h, {L(-BVN_CLIP)}), {L(BVN_CLIP)})  # upper limits: L(hu, ku; r)",
           f"    ku = min(max(-k, {L(-BVN_CLIP)}), {L(BVN_CLIP)})",
           "    rc = min(max(r, -1.0), 1.0)",
           "    ar = abs(rc)",
           f"    if ar < {L(BVN_HIGH_R)}:",
           "        hk = hu * ku if rc >= 0.0 else -(hu * ku)",
           "        out = _ncdf(-hu) * _ncdf(-ku) + math.copysign(_phi2_dw(hk, (hu * hu + ku * ku) * 0.5, ar), rc)",
           "    elif ar < 1.0:",
           "        out = _phi2_high(hu, ku, rc)",
           "    elif rc > 0.0:",
           "        out = _ncdf(-max(hu, ku))",
           "    else:  # P(hu < X < -ku)",
           "        out = max(0.0, _ncdf(-ku) - _ncdf(hu) if hu < 0.0 else _ncdf(-hu) - _ncdf(ku))",
           "    out = min(max(out, 0.0), 1.0)",
           "    return math.nan if bad else out", ""]
    ncdf = ["", _NJIT, "def _ncdf(t):", '    """Standard normal CDF via erfc (accurate in the lower tail)."""',
            f"    return 0.5 * math.erfc(-{L(INV_SQRT2)} * t)", ""]
    return {"_ncdf": "\n".join(ncdf), "_phi2_dw": "\n".join(dw), "_phi2_high": "\n".join(high),
            "_phi2": "\n".join(top)}


NUMBA_HELPERS.update(_numba_phi2())
NUMBA_HELPER_DEPS.update({"_ncdf": [], "_phi2_dw": [], "_phi2_high": ["_ncdf"],
                          "_phi2": ["_ncdf", "_phi2_dw", "_phi2_high"]})
#: Emission order of the Numba helpers (a helper after those it calls).
NUMBA_HELPER_ORDER = ("_asin_core", "_asin", "_acos", "_exp", "_ncdf", "_phi2_dw", "_phi2_high", "_phi2")


def cuda_phi2(precision: str) -> str:
    """CUDA C ``__device__`` Φ₂ for ``precision`` ("double" → ``dc_phi2_f64``, "float" →
    ``dc_phi2_f32``): the algorithm of the Numba helper above, line for line."""
    lg = _Lang("cuda", precision)
    T, sfx, L, F = precision, ("f64" if precision == "double" else "f32"), lg.lit, lg.fn
    one, zero, half = L(1.0), L(0.0), L(0.5)
    out = [f"// Phi2(h, k; r) = P(X < h, Y < k), correlation r ({precision}): Genz 2004, see codegen/mathlib.py",
           f"__device__ __forceinline__ {T} dc_ncdf_{sfx}({T} t) {{ return {half} * {F('erfc')}(-{L(INV_SQRT2)} * t); }}",
           "",
           f"__device__ __forceinline__ {T} dc_phi2_dw_{sfx}({T} hk, {T} hs, {T} ar)",
           "{",
           f"    const {T} asr = {F('asin')}(ar) * {half};",
           f"    {T} s;",
           f"    if (ar < {L(0.3)}) {{"]
    out += _dw_sum(lg, 6, "        ")
    out += [f"    }} else if (ar < {L(0.75)}) {{"]
    out += _dw_sum(lg, 12, "        ")
    out += ["    } else {"]
    out += _dw_sum(lg, 20, "        ")
    out += ["    }", f"    return s * asr * {L(1.0 / TWO_PI)};", "}", "",
            f"__device__ __forceinline__ {T} dc_phi2_high_{sfx}({T} h, {T} k, {T} r)",
            "{",
            f"    const bool neg = r < {zero};",
            "    if (neg) k = -k;",
            f"    const {T} hk = h * k;",
            f"    const {T} As = ({one} - r) * ({one} + r);",
            f"    const {T} a = {F('sqrt')}(As);",
            f"    const {T} bs = (h - k) * (h - k);",
            f"    const {T} cc = ({L(4.0)} - hk) * {L(0.125)};",
            f"    const {T} d = ({L(12.0)} - hk) * {L(0.0125)};",
            f"    {T} bvn = a * {F('exp')}(-(bs / As + hk) * {half}) * ({one} - cc * (bs - As) * ({one} - d * bs) / {L(3.0)}"
            f" + cc * d * As * As);",
            f"    const {T} b = {F('sqrt')}(bs);",
            f"    const {T} lphi = {F('log')}({half} * {F('erfc')}(b / a * {L(INV_SQRT2)}));",
            f"    bvn -= {L(SQRT_TWO_PI)} * {F('exp')}(-hk * {half} + lphi) * b * ({one} - cc * bs * ({one} - d * bs) / {L(3.0)});",
            f"    const {T} ah = a * {half};",
            f"    const {T} hk2 = hk * {half};",
            f"    const {T} d5 = {L(5.0)} * d;",
            f"    {T} s;"]
    out += _high_sum(lg, "    ")
    out += [f"    bvn = -(bvn + ah * s) / {L(TWO_PI)};",
            f"    if (!neg) return bvn + dc_ncdf_{sfx}(-{F('fmax')}(h, k));",
            "    if (h >= k) return -bvn;",
            f"    const {T} lo = h < {zero} ? dc_ncdf_{sfx}(k) - dc_ncdf_{sfx}(h) : dc_ncdf_{sfx}(-h) - dc_ncdf_{sfx}(-k);",
            "    return lo - bvn;",
            "}",
            "",
            f"__device__ __forceinline__ {T} dc_phi2_{sfx}({T} h, {T} k, {T} r)",
            "{",
            "    if (h != h || k != k || r != r) return h + k + r;  // NaN in, NaN out",
            f"    const {T} hu = {F('fmin')}({F('fmax')}(-h, {L(-BVN_CLIP)}), {L(BVN_CLIP)});  // upper limits: L(hu, ku; r)",
            f"    const {T} ku = {F('fmin')}({F('fmax')}(-k, {L(-BVN_CLIP)}), {L(BVN_CLIP)});",
            f"    const {T} rc = {F('fmin')}({F('fmax')}(r, -{one}), {one});",
            f"    const {T} ar = {F('fabs')}(rc);",
            f"    {T} out;",
            f"    if (ar < {L(BVN_HIGH_R)}) {{",
            f"        const {T} hk = rc >= {zero} ? hu * ku : -(hu * ku);",
            f"        out = dc_ncdf_{sfx}(-hu) * dc_ncdf_{sfx}(-ku) + {F('copysign')}(dc_phi2_dw_{sfx}(hk, (hu * hu + ku * ku) * {half}, ar), rc);",
            f"    }} else if (ar < {one}) {{",
            f"        out = dc_phi2_high_{sfx}(hu, ku, rc);",
            f"    }} else if (rc > {zero}) {{",
            f"        out = dc_ncdf_{sfx}(-{F('fmax')}(hu, ku));",
            "    } else {  // P(hu < X < -ku)",
            f"        out = {F('fmax')}({zero}, hu < {zero} ? dc_ncdf_{sfx}(-ku) - dc_ncdf_{sfx}(hu) : dc_ncdf_{sfx}(-hu) - dc_ncdf_{sfx}(ku));",
            "    }",
            f"    return {F('fmin')}({F('fmax')}(out, {zero}), {one});",
            "}",
            ""]
    return "\n".join(out)
