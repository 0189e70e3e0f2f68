r"""Piecewise activations with any finite number of breakpoints, each piece a sum of
polynomial × exp(a·x + b) terms (a real): ELU, SELU, CELU, hard tanh, hard sigmoid,
ReLU6, hard swish, thresholded and shifted ReLUs, exp(−|x|), piecewise-linear splines …
(docs/piecewise.md).

σ(x) = Σ_i 1[x ∈ I_i] Σ_t p_it(x) e^{a_it x + b_it}, I_i = (l_i, u_i), l_i, u_i ∈ ℝ ∪ {±∞}.
For (u, v) ~ N(0, Σ), Σ = [[q1, c], [c, q2]], one pair of terms gives

    E[p(u) p'(v) e^{a u + a' v + b + b'} 1[u ∈ I] 1[v ∈ I']]
        = e^{b + b' + ½ αᵀΣα} · E_{N(μ, Σ)}[p(u) p'(v) 1[u ∈ I] 1[v ∈ I']],   α = (a, a'), μ = Σα

(completing the square: the exponential tilts the Gaussian's mean, not its covariance).
With u = μ1 + √q1·g, v = μ2 + √q2·h, (g, h) standard with correlation ρ, the polynomials
become polynomials in (g, h) and everything reduces to truncated moments over the
rectangle R = (α1, β1) × (α2, β2) of the standardised limits,

    M_{m,n} = E[g^m h^n 1[(g, h) ∈ R]],

computed by Gaussian integration by parts (Stein: E[g f] = E[∂_g f] + ρ E[∂_h f]; the
derivative of an indicator is a pair of deltas on the rectangle's sides — the
recurrence of Kan & Robotti 2017 for n = 2):

    M_{m,n} = (m−1) M_{m−2,n} + ρ n M_{m−1,n−1} + B^g_{m−1,n} + ρ B^h_{m−1,n}          (m ≥ 1)
    M_{0,n} = (n−1) M_{0,n−2} + B^h_{0,n−1} + ρ B^g_{0,n−1}                              (n ≥ 1)
    M_{0,0} = P(R), a signed sum of Φ₂(±t1, ±t2; ±ρ) (one term per corner, semi-infinite
              sides as one orthant, so that small probabilities are not differences)
    B^g_{a,b} = Σ_{e = α1, β1} ±e^a φ(e) T_b(ρe, 1−ρ², (α2, β2))   (+ at α1, − at β1)
    B^h_{a,b} = Σ_{e = α2, β2} ±e^b φ(e) T_a(ρe, 1−ρ², (α1, β1))

with T_b(μ, v, I) = E[X^b 1[X ∈ I]], X ~ N(μ, v), by the 1-D recurrence
T_b = μ T_{b−1} + (b−1) v T_{b−2} + √v (α^{b−1} φ(α') − β^{b−1} φ(β')), α' = (α − μ)/√v.
Infinite sides drop out.  At |ρ| = 1 the conditional variance 1 − ρ² is 0: the
standard deviation is floored at 1e-300 there, which gives the continuous limit (the
boundary terms' (α − μ)/√v is 0/0 only where its limit is 0), and Φ₂ itself is exact at
ρ = ±1 (:mod:`dualcalc.bvn`).  ρ and c enter only as ρ and ρ√(q1 q2), so the clipped
correlation is used consistently.

k̇ = E[σ'(u)σ'(v)] with σ' the a.e. derivative, piece by piece ((p' + a p) e^{ax+b}) — the
same rule.  Where σ is continuous this is ∂k/∂c (Price's theorem; ``ntk_convention =
"price"``); where σ jumps (thresholded ReLU, a step inside a formula) σ' holds a delta
and, as for sign/step in :mod:`.piecewise`, the delta is dropped (``"zero-a.e."``).

Breakpoints are found exactly: the kinks of Heaviside/sign/Abs/Max/Min/Piecewise nodes
whose arguments are polynomials (nested nodes are resolved interval by interval), and
each piece is read off by choosing every node's branch at an interior point.  The
pieces are checked numerically against σ before anything is derived.
"""
from __future__ import annotations

import itertools
import math

import mpmath
import sympy as sp

from ..bvn import Phi2, _Phi_sym
from ..symbols import q1, q2, rho, x
from . import limits
from .common import poly_coeffs
from .gaussian import decompose
from .result import Derived

_KINKY = (sp.Heaviside, sp.sign, sp.Abs, sp.Max, sp.Min, sp.Piecewise)
#: floor of the conditional standard deviation √(1 − ρ²) (its limit at |ρ| = 1)
_SV_FLOOR = sp.Float(1e-150)
_MAX_PIECES = 24
_MAX_DEGREE = 6


class _NotApplicable(Exception):
    pass


# -- pieces ----------------------------------------------------------------------------
def switch_arguments(node: sp.Expr) -> list[sp.Expr]:
    """The functions of x whose sign decides the branch of a Heaviside/sign/Abs/Max/Min/Piecewise
    node: the argument, the pairwise differences of Max/Min arguments, lhs − rhs of each relational
    Piecewise condition (others are skipped).  Shared with :func:`dualcalc.activation.find_kinks`."""
    if isinstance(node, (sp.Heaviside, sp.sign, sp.Abs)):
        return [node.args[0]]
    if isinstance(node, (sp.Max, sp.Min)):
        a = node.args
        return [a[i] - a[j] for i in range(len(a)) for j in range(i + 1, len(a))]
    return [cond.lhs - cond.rhs for _, cond in node.args if isinstance(cond, sp.core.relational.Relational)]


def _switches(node: sp.Expr) -> list[sp.Expr]:
    """:func:`switch_arguments`, but a Piecewise condition that is not a relation (And, Or, …)
    makes the rule not applicable: its branches could not be read off by sign."""
    if isinstance(node, sp.Piecewise) and any(
            cond is not sp.true and not isinstance(cond, sp.core.relational.Relational) for _, cond in node.args):
        raise _NotApplicable
    return switch_arguments(node)


def _branch(node: sp.Expr, t0: sp.Expr) -> sp.Expr:
    """The smooth expression a kinky node equals near the interior point t0."""
    def val(e):
        return e.subs(x, t0)

    if isinstance(node, sp.Heaviside):
        s = val(node.args[0])
        if s == 0:  # the argument vanishes on the whole interval
            return node.args[1] if len(node.args) > 1 else sp.S.Half
        return sp.S.One if s > 0 else sp.S.Zero
    if isinstance(node, sp.sign):
        s = val(node.args[0])
        return sp.S.Zero if s == 0 else (sp.S.One if s > 0 else sp.S.NegativeOne)
    if isinstance(node, sp.Abs):
        a = node.args[0]
        return a if val(a) >= 0 else -a
    if isinstance(node, (sp.Max, sp.Min)):
        vals = [val(a) for a in node.args]
        pick = max if isinstance(node, sp.Max) else min
        return node.args[vals.index(pick(vals))]
    for e, cond in node.args:
        if cond is sp.true or bool(cond.subs(x, t0)):
            return e
    raise _NotApplicable


def _roots(f: sp.Expr) -> list[sp.Expr]:
    """The real roots of a polynomial switch function (exact), else not applicable."""
    f = sp.expand(f)
    if not f.has(x):
        return []
    try:
        p = sp.Poly(f, x)
    except sp.PolynomialError:
        raise _NotApplicable from None
    if not all(m.is_number for m in p.all_coeffs()) or p.degree() > 4:
        raise _NotApplicable
    if any(isinstance(m, sp.Float) for m in p.all_coeffs()):
        p = sp.Poly(sp.nsimplify(f, rational=True), x)
    return sorted(set(sp.real_roots(p)), key=lambda r: float(r))


def _sample(lo, hi) -> sp.Expr:
    if lo is -sp.oo and hi is sp.oo:
        return sp.S.Zero
    if lo is -sp.oo:
        return hi - 1
    if hi is sp.oo:
        return lo + 1
    return (lo + hi) / 2


def _split(expr: sp.Expr, lo, hi, depth: int = 0) -> list[tuple]:
    """[(lo, hi, smooth expression)] covering (lo, hi)."""
    limits.check()
    inner = [n for n in sp.preorder_traversal(expr)
             if isinstance(n, _KINKY) and n.has(x) and not any(a.has(*_KINKY) for a in n.args)]
    if not inner:
        return [(lo, hi, expr)]
    if depth > 8:
        raise _NotApplicable
    pts = set()
    for n in inner:
        for f in _switches(n):
            for r in _roots(f):
                if (lo is -sp.oo or r > lo) and (hi is sp.oo or r < hi):
                    pts.add(r)
    edges = [lo] + sorted(pts, key=float) + [hi]
    out = []
    for a, b in itertools.pairwise(edges):
        t0 = _sample(a, b)
        e2 = expr.xreplace({n: _branch(n, t0) for n in inner})
        out += _split(e2, a, b, depth + 1)
        if len(out) > _MAX_PIECES:
            raise _NotApplicable
    return out


def breakpoints(expr: sp.Expr) -> tuple[float, ...]:
    """The real x where a branch of a Heaviside/sign/Abs/Max/Min/Piecewise node with polynomial
    arguments switches (sorted floats); () when there is none or they cannot be found exactly."""
    if not expr.has(*_KINKY):
        return ()
    try:
        raw = _split(expr, -sp.oo, sp.oo)
    except _NotApplicable:
        return ()
    return tuple(float(lo) for lo, _, _ in raw[1:])


def _terms(piece: sp.Expr) -> list[tuple[sp.Expr, tuple]]:
    """A smooth piece as [(a, (m_0, m_1, …))]: Σ (Σ_j m_j x^j) e^{a x}, a real, else not applicable."""
    piece = sp.expand(piece)
    if piece == 0:
        return []
    coeffs = poly_coeffs(piece)
    if coeffs is not None:
        return [(sp.S.Zero, tuple(coeffs))]
    dec = decompose(piece)
    if dec is None:
        raise _NotApplicable
    out = []
    for beta, gamma, p in dec:
        if gamma != 0 or not (beta.is_real and beta.is_number):
            raise _NotApplicable
        out.append((beta, tuple(p)))
    return out


def pieces(expr: sp.Expr) -> list[tuple] | None:
    """[(lo, hi, [(a, coeffs), …])] with adjacent equal pieces merged, or None."""
    if not expr.has(*_KINKY):
        return None
    try:
        raw = _split(expr, -sp.oo, sp.oo)
        out = []
        for lo, hi, e in raw:
            t = _terms(e)
            if any(len(p) - 1 > _MAX_DEGREE for _, p in t):
                return None
            if out and _same(out[-1][2], t):
                out[-1] = (out[-1][0], hi, out[-1][2])
            else:
                out.append((lo, hi, t))
    except _NotApplicable:
        return None
    if len(out) < 2:
        return None
    if not _reproduces(expr, out):
        return None
    return out


def _same(a, b) -> bool:
    return sp.simplify(_rebuild(a) - _rebuild(b)) == 0


def _rebuild(terms) -> sp.Expr:
    return sp.Add(*[sp.Add(*[m * x**j for j, m in enumerate(p)]) * sp.exp(a * x) for a, p in terms])


def _reproduces(expr: sp.Expr, out) -> bool:
    """The pieces equal σ at points inside every piece (30 digits)."""
    f = sp.lambdify([x], expr, modules="mpmath")
    with mpmath.workdps(30):
        for lo, hi, t in out:
            g = sp.lambdify([x], _rebuild(t), modules="mpmath")
            span = [float(lo) if lo is not -sp.oo else float(hi) - 7.3,
                    float(hi) if hi is not sp.oo else float(lo) + 7.3]
            for w in (0.113, 0.5, 0.877):
                t0 = mpmath.mpf(span[0] + w * (span[1] - span[0]))
                a, b = f(t0), g(t0)
                if abs(a - b) > 1e-20 * (1 + abs(a)):
                    return False
    return True


def _derivative(terms) -> list[tuple[sp.Expr, tuple]]:
    out = []
    for a, p in terms:
        d = [j * p[j] for j in range(1, len(p))] + [sp.S.Zero]
        new = tuple(d[j] + a * p[j] for j in range(len(p)))
        while len(new) > 1 and new[-1] == 0:
            new = new[:-1]
        if any(m != 0 for m in new):
            out.append((a, new))
    return out


def _jumps(ps) -> bool:
    for (_, hi, t), (lo, _, t2) in itertools.pairwise(ps):
        v1 = complex(_rebuild(t).subs(x, hi).evalf(30))
        v2 = complex(_rebuild(t2).subs(x, lo).evalf(30))
        if abs(v1 - v2) > 1e-14 * (1 + abs(v1)):
            return True
    return False


# -- Gaussian algebra ---------------------------------------------------------------------
_Phi = _Phi_sym  # Φ, tail-safe (see dualcalc.bvn)


def _phi(t: sp.Expr) -> sp.Expr:
    return sp.exp(-t**2 / 2) / sp.sqrt(2 * sp.pi)


_INF = (sp.oo, -sp.oo)


class _Ctx:
    """Shared symbolic quantities: ρ, the conditional variance/deviation."""

    def __init__(self):
        self.v = (1 - rho) * (1 + rho)
        self.sv = sp.Max(sp.sqrt(self.v), _SV_FLOOR)


def _T(ctx: _Ctx, b: int, mu: sp.Expr, lo, hi, memo: dict) -> sp.Expr:
    """E[X^b 1[lo < X < hi]], X ~ N(mu, v)."""
    key = (b, mu, lo, hi)
    if key in memo:
        return memo[key]
    if b == 0:
        # half-lines as one Φ (a tail probability is never 1 − Φ: that loses it to rounding)
        if hi is sp.oo:
            out = sp.S.One if lo is -sp.oo else _Phi((mu - lo) / ctx.sv)
        elif lo is -sp.oo:
            out = _Phi((hi - mu) / ctx.sv)
        else:
            out = _Phi((hi - mu) / ctx.sv) - _Phi((lo - mu) / ctx.sv)
    else:
        out = mu * _T(ctx, b - 1, mu, lo, hi, memo)
        if b >= 2:
            out += (b - 1) * ctx.v * _T(ctx, b - 2, mu, lo, hi, memo)
        if lo is not -sp.oo:
            out += ctx.sv * lo ** (b - 1) * _phi((lo - mu) / ctx.sv)
        if hi is not sp.oo:
            out -= ctx.sv * hi ** (b - 1) * _phi((hi - mu) / ctx.sv)
    memo[key] = out
    return out


def _half_lines(lo, hi) -> list[tuple[int, int, sp.Expr]]:
    """The interval as signed half-lines: [(sign, s, t)] with the event s·g < t."""
    if lo is -sp.oo:
        return [(1, 1, hi)]
    if hi is sp.oo:
        return [(1, -1, -lo)]
    return [(1, 1, hi), (-1, 1, lo)]


def _prob(I1, I2) -> sp.Expr:
    out = sp.S.Zero
    for sg1, s1, t1 in _half_lines(*I1):
        for sg2, s2, t2 in _half_lines(*I2):
            out += sg1 * sg2 * Phi2(t1, t2, s1 * s2 * rho)
    return out


class _Rectangle:
    """Truncated moments M_{m,n} over (α1, β1) × (α2, β2) for correlation ρ."""

    def __init__(self, ctx: _Ctx, I1, I2):
        self.ctx, self.I1, self.I2 = ctx, I1, I2
        self.memo: dict = {}
        self.tmemo: dict = {}

    def _boundary(self, sides, power: int, other, order: int) -> sp.Expr:
        """Σ over the finite sides e of one interval: ±e^power φ(e) T_order(ρe, 1 − ρ², other)
        (+ at the lower side, − at the upper)."""
        out = sp.S.Zero
        for e, sg in ((sides[0], 1), (sides[1], -1)):
            if e not in _INF:
                out += sg * e**power * _phi(e) * _T(self.ctx, order, rho * e, *other, self.tmemo)
        return out

    def _Bg(self, a: int, b: int) -> sp.Expr:
        return self._boundary(self.I1, a, self.I2, b)

    def _Bh(self, a: int, b: int) -> sp.Expr:
        return self._boundary(self.I2, b, self.I1, a)

    def M(self, m: int, n: int) -> sp.Expr:
        key = (m, n)
        if key in self.memo:
            return self.memo[key]
        limits.check()
        if m == 0 and n == 0:
            out = _prob(self.I1, self.I2)
        elif m >= 1:
            out = self._Bg(m - 1, n) + rho * self._Bh(m - 1, n)
            if m >= 2:
                out += (m - 1) * self.M(m - 2, n)
            if n >= 1:
                out += rho * n * self.M(m - 1, n - 1)
        else:
            out = self._Bh(0, n - 1) + rho * self._Bg(0, n - 1)
            if n >= 2:
                out += (n - 1) * self.M(0, n - 2)
        self.memo[key] = out
        return out


def _shifted(p: tuple, mu: sp.Expr, s: sp.Expr) -> list[sp.Expr]:
    """Coefficients of p(mu + s·g) in g."""
    out = [sp.S.Zero] * len(p)
    for j, m in enumerate(p):
        if m == 0:
            continue
        for i in range(j + 1):
            out[i] += m * math.comb(j, i) * mu ** (j - i) * s**i
    return out


def _limit(e, mu, s):
    return e if e in _INF else (e - mu) / s


def _dual(ps) -> sp.Expr:
    """Σ over pairs of pieces and terms of the tilted rectangle moments."""
    ctx = _Ctx()
    s1, s2 = sp.sqrt(q1), sp.sqrt(q2)
    cc = rho * s1 * s2
    total = sp.S.Zero
    for lo_i, hi_i, ti in ps:
        for lo_j, hi_j, tj in ps:
            for a, p in ti:
                for b, r in tj:
                    limits.check()
                    mu1 = a * q1 + b * cc
                    mu2 = a * cc + b * q2
                    I1 = (_limit(lo_i, mu1, s1), _limit(hi_i, mu1, s1))
                    I2 = (_limit(lo_j, mu2, s2), _limit(hi_j, mu2, s2))
                    rect = _Rectangle(ctx, I1, I2)
                    A = _shifted(p, mu1, s1)
                    B = _shifted(r, mu2, s2)
                    inner = sp.Add(*[A[m] * B[n] * rect.M(m, n)
                                     for m in range(len(A)) for n in range(len(B))
                                     if A[m] != 0 and B[n] != 0])
                    tilt = (a * a * q1 + 2 * a * b * cc + b * b * q2) / 2
                    total += (sp.exp(tilt) if tilt != 0 else sp.S.One) * inner
    return total


def piecewise_exp_dual(expr: sp.Expr) -> Derived | None:
    """Closed-form dual of a piecewise polynomial-times-exponential σ, else None."""
    ps = pieces(expr)
    if ps is None:
        return None
    k = _dual(ps)
    dps = [(lo, hi, _derivative(t)) for lo, hi, t in ps]
    dps = [pc for pc in dps if pc[2]]
    kdot = _dual(dps) if dps else sp.S.Zero
    conv = "zero-a.e." if _jumps(ps) else "price"
    return Derived(nngp=k, ntk=kdot, rule="piecewise-exponential", ntk_convention=conv)
