r"""An independent mpmath oracle for dual activations (tests of dualcalc.derive).

    k(q1, q2, c) = E[σ(u) σ(v)],  k̇(q1, q2, c) = E[σ'(u) σ'(v)],  (u, v) ~ N(0, [[q1, c], [c, q2]])

by 2-D quadrature in *polar* coordinates of the whitened pair:
u = √q1·r cos φ, v = √q2·r cos(φ − ψ), ψ = arccos ρ, density r e^{−r²/2}/(2π).

* Kinks of σ at 0 are the lines u = 0 and v = 0, i.e. the angles φ = ±π/2 and
  ψ ± π/2: the angular integral is split there, so each sector's integrand is
  smooth in φ, and — for σ whose only kink is at 0 — smooth in r.
* Both directions use composite Gauss–Legendre panels graded geometrically
  towards the places where the integrand is sharp: r → 0 (σ(√q r cos φ) varies on
  the scale r ~ 1/√q for large q) and the sector ends (σ switches sides there).
  The radial range ends at R = 15 + the drift of exponential tilts.
* σ and σ' come from SymPy's lambdify with mpmath functions.  ``precision="fp"``
  (default) evaluates them in mpmath's double-precision ``fp`` context (fast;
  falls back to the multiprecision context on overflow) and sums with
  ``math.fsum``; ``precision="mp"`` does everything at ``DPS`` digits (slow, used
  to check the fast mode).  σ' is SymPy's derivative with Dirac deltas dropped.

Isotropy of the whitened Gaussian means |ρ| → 1 needs no special care.  Nothing
here reads a dual formula, a Hermite table or a catalog entry: it only needs σ.
``oracle(..., check=True)`` also integrates with finer panels and returns the
difference (the oracle's own error estimate).
"""
from __future__ import annotations

import math
from functools import lru_cache

import mpmath as mp
import numpy as np
import sympy as sp

from dualcalc.symbols import x

DPS = 25
NODES = 8  # Gauss–Legendre nodes per panel (10 when refining)
_FP = mp.fp
# Double precision: mpmath's fp context, whose elementary functions are the C library's; those are
# called directly (fp's Python-level dispatch would dominate the run time).
_FP_MODULE = {"exp": math.exp, "erf": math.erf, "erfc": math.erfc, "sin": math.sin, "cos": math.cos,
              "tan": math.tan, "tanh": math.tanh, "sinh": math.sinh, "cosh": math.cosh, "log": math.log,
              "sqrt": math.sqrt, "atan": math.atan, "asin": math.asin, "acos": math.acos, "pi": math.pi,
              "E": math.e, "mpf": float, "sign": lambda t: float((t > 0) - (t < 0))}


def _ae_derivative(expr: sp.Expr) -> sp.Expr:
    d = sp.diff(expr, x)
    return d.replace(lambda n: isinstance(n, sp.DiracDelta), lambda n: sp.S.Zero)


def mp_function(expr: sp.Expr):
    """σ at mpmath multiprecision (arguments and results mpf)."""
    f = sp.lambdify([x], expr, modules="mpmath")

    def g(t):
        v = f(t)
        return v if isinstance(v, mp.mpf) else mp.mpf(v)
    return g


def fp_function(expr: sp.Expr):
    """σ in mpmath's double-precision context (falls back to multiprecision on overflow)."""
    f = sp.lambdify([x], expr, modules=[_FP_MODULE, "mpmath"])
    slow = mp_function(expr)

    def g(t):
        try:
            return float(f(t))
        except (OverflowError, ValueError, ZeroDivisionError):
            with mp.workdps(DPS):
                return float(slow(mp.mpf(t)))
    return g


@lru_cache(maxsize=8)
def _gl(n: int, prec: str):
    if prec == "fp":
        xs, ws = np.polynomial.legendre.leggauss(n)
        return tuple(float(v) for v in xs), tuple(float(v) for v in ws)
    with mp.workdps(DPS + 10):
        xs, ws = [], []
        for x0 in np.polynomial.legendre.leggauss(n)[0]:
            t = mp.mpf(x0)
            for _ in range(4):
                t -= mp.legendre(n, t) / mp.diff(lambda z: mp.legendre(n, z), t)
            dp = mp.diff(lambda z: mp.legendre(n, z), t)
            xs.append(t)
            ws.append(2 / ((1 - t * t) * dp * dp))
    return tuple(xs), tuple(ws)


def _composite(edges, n: int, prec: str):
    gx, gw = _gl(n, prec)
    nodes, weights = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        h, m = (b - a) / 2, (a + b) / 2
        nodes.extend(m + h * t for t in gx)
        weights.extend(h * w for w in gw)
    return nodes, weights


def _radial_edges(scale: float, R: float, refine: int):
    """0 … R: panels growing geometrically from scale·2⁻⁸ (width ∝ r near 0, where σ(√q r cos φ)
    varies on the scale r ~ 1/√q), capped at 0.75 (the Gaussian's scale)."""
    ratio = 1.35 if not refine else 1.2
    cap = 0.75 if not refine else 0.4
    r = min(1.0, scale) * 2.0 ** -8
    edges = [0.0, r]
    while r < R:
        r = min(R, r + min(cap, r * (ratio - 1)))
        edges.append(r)
    return edges


def _sector_edges(a, b, refine: int, sharp: bool = True):
    """[a, b] graded geometrically towards both ends (σ switches sides at a sector's ends;
    ``sharp``: large variances, where it does so abruptly)."""
    fr = [0.0, 1 / 1024, 1 / 256, 1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2]
    if not sharp and not refine:
        fr = [0.0, 1 / 64, 1 / 16, 1 / 4, 1 / 2]
    if refine:
        fr += [1 / 4096, 1 / 512, 1 / 128, 3 / 32, 3 / 16, 5 / 16, 7 / 16]
    fr = sorted(set(fr) | {1 - f for f in fr})
    return [a + (b - a) * f for f in fr]


def _integrate(fu, fv, q1, q2, c, refine: int, prec: str, tilt: float):
    if prec == "fp":
        num, cos, acos, sqrt, pi, fsum = float, math.cos, math.acos, math.sqrt, math.pi, math.fsum
    else:
        num, cos, acos, sqrt, pi, fsum = mp.mpf, mp.cos, mp.acos, mp.sqrt, mp.pi, mp.fsum
    q1, q2, c = num(q1), num(q2), num(c)
    sq1, sq2 = sqrt(q1), sqrt(q2)
    rho = max(min(c / (sq1 * sq2), num(1)), num(-1))
    psi = acos(rho)
    cuts = sorted({num(0), pi / 2, 3 * pi / 2, 2 * pi, (psi + pi / 2) % (2 * pi), (psi + 3 * pi / 2) % (2 * pi)})
    sharp = 2.0 / math.sqrt(float(max(q1, q2)))
    R = 12.0 + 2.0 * tilt * float(sq1 + sq2)
    rn, rw = _composite([num(e) for e in _radial_edges(sharp, R, refine)], NODES + 2 * refine, prec)
    dens = [w * r * (math.exp(-r * r / 2) if prec == "fp" else mp.exp(-r * r / 2)) for r, w in zip(rn, rw)]
    terms = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        if b - a < 1e-15:
            continue
        pn, pw = _composite(_sector_edges(a, b, refine), NODES + 2 * refine, prec)
        for phi, w in zip(pn, pw):
            cu, cv = sq1 * cos(phi), sq2 * cos(phi - psi)
            terms.append(w * fsum(d * fu(r * cu) * fv(r * cv) for r, d in zip(rn, dens) if d != 0))
    return fsum(terms) / (2 * pi)


def growth_rate(expr: sp.Expr) -> float:
    """An estimate of the exponential growth rate t of σ (|σ(x)| ≈ e^{t|x|} at large |x|; 0 for
    polynomially bounded σ, up to ~0.035 per polynomial degree)."""
    f = mp_function(expr)
    rate = 0.0
    with mp.workdps(DPS):
        for sgn in (-1, 1):
            try:
                a, b = abs(f(mp.mpf(20 * sgn))), abs(f(mp.mpf(40 * sgn)))
            except (ValueError, ZeroDivisionError, OverflowError):
                continue
            if a > 0 and b > 0:
                rate = max(rate, float((mp.log(b) - mp.log(a)) / 20))
    return rate


def oracle(expr: sp.Expr, q1: float, q2: float, c: float, *, which: str = "nngp", check: bool = False,
           precision: str = "fp", tilt: float | None = None):
    """E[σ(u)σ(v)] (``which="nngp"``) or E[σ'(u)σ'(v)] (``"ntk"``).

    ``tilt``: the exponential growth rate of σ (|σ(x)| ≲ e^{tilt·|x|}; estimated when None),
    which widens the radial range.  ``check=True`` returns (value, |value − finer value|).
    """
    e = expr if which == "nngp" else _ae_derivative(expr)
    if tilt is None:
        tilt = growth_rate(e)
    if precision == "fp":
        f = fp_function(e)
        val = _integrate(f, f, q1, q2, c, 0, "fp", tilt)
        if not check:
            return val
        fine = _integrate(f, f, q1, q2, c, 1, "fp", tilt)
        return fine, abs(fine - val)
    s = mp_function(e)
    with mp.workdps(DPS):
        val = _integrate(s, s, q1, q2, c, 0, "mp", tilt)
        if not check:
            return val
        fine = _integrate(s, s, q1, q2, c, 1, "mp", tilt)
        return fine, abs(fine - val)


def diagonal(expr: sp.Expr, q: float, *, which: str = "nngp", kinks=(0.0,)):
    """E[σ(√q g)²] (or E[σ'(√q g)²]) by 1-D quadrature (mpmath's fp.quad), split at the kinks."""
    e = expr if which == "nngp" else _ae_derivative(expr)
    f = fp_function(e)
    sq = math.sqrt(q)
    pts = [-math.inf] + sorted({k / sq for k in kinks} | {0.0}) + [math.inf]
    return float(_FP.quad(lambda g: f(sq * g) ** 2 * math.exp(-g * g / 2) / math.sqrt(2 * math.pi), pts))


def run_job(job) -> float:
    """One oracle value for the tests: (formula, params, which, (q1, q2, c), kinks) → float.

    On the diagonal q1 = q2 = c the 1-D integral; elsewhere the 2-D one."""
    from dualcalc.formula import parse_formula

    formula, params, which, (q1, q2, c), kinks = job
    expr = parse_formula(formula, params)
    if q1 == q2 == c:
        return diagonal(expr, q1, which=which, kinks=kinks or (0.0,))
    return float(oracle(expr, q1, q2, c, which=which))
