r"""An independent oracle for dual activations, by mpmath quadrature.

Nothing here uses dualcalc: the activations σ and their derivatives σ' are plain
lambdas written below, and the Gaussian expectations are computed numerically.

For (u, v) ~ N(0, [[q1, c], [c, q2]]) write u = √q1·g and, given g,
v = m + τ·z with m = √q2·ρ·g, τ = √q2·√(1 − ρ²), z ~ N(0, 1) independent of g.  Then

    k  = E_g[ σ(u)  · E_z σ(m + τz)  ],
    k̇ = E_g[ σ'(u) · E_z σ'(m + τz) ].

Two ways of doing the inner expectation:

* :func:`pair` — where the 1-D conditional expectation h(m, τ) = E σ(m + τz) has an
  elementary closed form (truncated Gaussian moments, the Gaussian integral of
  exp(αt + βt²) with complex α, E erf(b t) = erf(b m/√(1+2b²τ²)), …; each derived and
  written out in this file), it is used, and the outer integral over g is a tanh-sinh
  quadrature (``quad`` of an mpmath context) split at the kinks of σ(u) and of h.
  ``ctx=mp`` works at ``DPS`` digits; ``ctx=fp`` (mpmath's double-precision context,
  ~50× faster) splits the range more finely and is good to ~1e-13.
* :func:`pair_2d` — for any σ: a nested 2-D tanh-sinh quadrature (outer over g, inner
  over z, both split at the kinks and at the points where the argument of σ is 0),
  in the ``fp`` context (~1e-13 relative).

Both return (k, k̇) as Python floats.  :func:`diag` gives the diagonal
(E σ(√q g)², E σ'(√q g)²) by 1-D quadrature, :func:`hermite_coefficients` the
normalised Hermite coefficients r_l(q) = E[σ(√q g) He_l(g)]/√(l!).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import mpmath

mp = mpmath.mp
fp = mpmath.fp

#: Working precision of the mp-context quadratures (digits).
DPS = 20
#: Half-width in standard-normal units of the finite 2-D rule (φ(10) ≈ 8e-23).
L2D = 10.0
#: Extra split points of the outer integral in the fp context.
FP_SPLITS = (-8.0, -4.0, -2.0, -1.0, 1.0, 2.0, 4.0, 8.0)
#: Beyond |g| = FP_CUT the fp integrands are taken as 0 (e^{−g²/2} < 1e−300 there,
#: larger than any growth e^{βg} of the activations tested, β ≤ 20).
FP_CUT = 37.0


@dataclass(frozen=True, eq=False)
class Sigma:
    """An activation for the oracle.

    ``f(ctx, t)``, ``df(ctx, t)``: σ and its almost-everywhere derivative, written with
    the functions of an mpmath context ``ctx`` (``mp`` or ``fp``).  ``kinks``: points
    where σ or σ' is not smooth.  ``cond(ctx, m, tau)``: (E σ(m+τz), E σ'(m+τz)) for
    z ~ N(0, 1), or None when only :func:`pair_2d` applies.  ``growth_ok_2d``: σ grows
    slowly enough for the finite 2-D rule.
    """

    name: str
    f: Callable
    df: Callable
    kinks: tuple[float, ...] = ()
    cond: Callable | None = None
    growth_ok_2d: bool = True


# ---------------------------------------------------------------------------
# 1-D Gaussian expectations for t ~ N(m, τ²), τ > 0, in context ctx.
# ---------------------------------------------------------------------------

_CONSTANTS: dict = {}


def _constants(ctx):
    """(1/√2, 1/√(2π)) in the context at its current precision."""
    key = (id(ctx), ctx.prec)
    out = _CONSTANTS.get(key)
    if out is None:
        out = _CONSTANTS[key] = (1 / ctx.sqrt(2), 1 / ctx.sqrt(2 * ctx.pi))
    return out


def Phi(ctx, x):
    """Standard normal CDF Φ(x) = erfc(−x/√2)/2."""
    return ctx.erfc(-x * _constants(ctx)[0]) / 2


def phi(ctx, x):
    """Standard normal density φ(x) = exp(−x²/2)/√(2π)."""
    return ctx.exp(-x * x / 2) * _constants(ctx)[1]


def g_exp(ctx, alpha, beta, m, tau):
    """E exp(αt + βt²) = D^{-1/2} exp((αm + βm² + α²τ²/2)/D), D = 1 − 2βτ² (α may be complex).

    Completing the square in z: the exponent αm + βm² + (ατ + 2βmτ)z − (1 − 2βτ²)z²/2."""
    D = 1 - 2 * beta * tau**2
    return ctx.exp((alpha * m + beta * m**2 + alpha**2 * tau**2 / 2) / D) / ctx.sqrt(D)


def g_t_exp(ctx, alpha, beta, m, tau):
    """E t·exp(αt + βt²) = ∂/∂α of :func:`g_exp` = g_exp·(m + ατ²)/D."""
    D = 1 - 2 * beta * tau**2
    return g_exp(ctx, alpha, beta, m, tau) * (m + alpha * tau**2) / D


def moment(n: int, m, tau):
    """E tⁿ = Σ_k C(n, k) m^{n−k} τ^k E z^k, E z^k = (k−1)!! for even k."""
    out = 0
    dfac = 1                                   # (k−1)!! for k = 0, 2, 4, ...
    for k in range(0, n + 1, 2):
        out += math.comb(n, k) * dfac * m ** (n - k) * tau**k
        dfac *= k + 1
    return out


def trunc_moment(ctx, n: int, m, tau):
    """E tⁿ·1[t > 0] = τⁿ Σ_k C(n, k) a^{n−k} T_k(−a), a = m/τ, with the truncated
    moments T_k(l) = ∫_l^∞ z^k φ(z) dz: T_0 = 1 − Φ(l), T_1 = φ(l),
    T_k = l^{k−1} φ(l) + (k−1) T_{k−2} (integration by parts)."""
    if ctx is mp:                        # the sum cancels for a ≪ 0: guard digits
        with mp.workdps(mp.dps + 20):
            return +_trunc_moment(mp, n, m, tau)
    return _trunc_moment(ctx, n, m, tau)


def _trunc_moment(ctx, n, m, tau):
    a = m / tau
    low = -a
    T = [Phi(ctx, a), phi(ctx, low)]
    for k in range(2, n + 1):
        T.append(low ** (k - 1) * phi(ctx, low) + (k - 1) * T[k - 2])
    s = 0
    for k in range(n + 1):
        s += math.comb(n, k) * a ** (n - k) * T[k]
    return tau**n * s


# ---------------------------------------------------------------------------
# The activations (σ, σ' and the conditional expectations by hand).
# Parameters are kept as decimal strings and converted in the context used.
# ---------------------------------------------------------------------------

def _num(ctx, v):
    return ctx.mpf(v if isinstance(v, str) else repr(float(v)))


def abrelu(a=0.0, b=1.0, name: str = "abrelu") -> Sigma:
    def f(ctx, t):
        return _num(ctx, b) * t if t > 0 else _num(ctx, a) * t

    def df(ctx, t):
        return _num(ctx, b) if t > 0 else _num(ctx, a)

    def cond(ctx, m, tau):
        # E max(t, 0) = m Φ(m/τ) + τ φ(m/τ);  E min(t, 0) = m − E max(t, 0);  P(t > 0) = Φ(m/τ)
        A, B = _num(ctx, a), _num(ctx, b)
        P = Phi(ctx, m / tau)
        p = m * P + tau * phi(ctx, m / tau)
        return B * p + A * (m - p), B * P + A * (1 - P)

    return Sigma(name, f, df, (0.0,), cond)


def relu() -> Sigma:
    return abrelu(0.0, 1.0, "relu")


def leaky_relu(alpha=0.01) -> Sigma:
    return abrelu(alpha, 1.0, "leaky_relu")


def absolute() -> Sigma:
    return abrelu(-1.0, 1.0, "abs")


def sign() -> Sigma:
    return Sigma("sign", lambda ctx, t: ctx.one if t > 0 else (-ctx.one if t < 0 else ctx.zero),
                 lambda ctx, t: ctx.zero, (0.0,),
                 lambda ctx, m, tau: (2 * Phi(ctx, m / tau) - 1, ctx.zero))


def step() -> Sigma:
    return Sigma("step", lambda ctx, t: ctx.one if t > 0 else (ctx.zero if t < 0 else ctx.mpf(0.5)),
                 lambda ctx, t: ctx.zero, (0.0,),
                 lambda ctx, m, tau: (Phi(ctx, m / tau), ctx.zero))


def erf(a=1.0, b=1.0, d=0.0, name: str = "erf") -> Sigma:
    def f(ctx, t):
        return _num(ctx, a) * ctx.erf(_num(ctx, b) * t) + _num(ctx, d)

    def df(ctx, t):
        B = _num(ctx, b)
        return _num(ctx, a) * B * 2 / ctx.sqrt(ctx.pi) * ctx.exp(-(B * t) ** 2)

    def cond(ctx, m, tau):
        # E erf(Bt) = P(z' < Bt·√2) = erf(Bm/√(1 + 2B²τ²));  σ' = (2AB/√π)·exp(−B²t²)
        A, B, C = _num(ctx, a), _num(ctx, b), _num(ctx, d)
        k = A * ctx.erf(B * m / ctx.sqrt(1 + 2 * B**2 * tau**2)) + C
        return k, 2 * A * B / ctx.sqrt(ctx.pi) * g_exp(ctx, 0, -B**2, m, tau)

    return Sigma(name, f, df, (), cond)


SIGMOID_LIKE_SCALE = "2.4020563531719796"


def sigmoid_like() -> Sigma:
    s = erf("0.5", "1", "0.5")

    # ½·erf(x/s) + ½ with s = 2.4020563531719796 (the division done in the context)
    def f(ctx, t):
        return s.f(ctx, t / ctx.mpf(SIGMOID_LIKE_SCALE))

    def df(ctx, t):
        return s.df(ctx, t / ctx.mpf(SIGMOID_LIKE_SCALE)) / ctx.mpf(SIGMOID_LIKE_SCALE)

    def cond(ctx, m, tau):
        S = ctx.mpf(SIGMOID_LIKE_SCALE)
        k, kd = s.cond(ctx, m / S, tau / S)
        return k, kd / S

    return Sigma("sigmoid_like", f, df, (), cond)


def gelu() -> Sigma:
    def f(ctx, t):
        return t * Phi(ctx, t)

    def df(ctx, t):
        return Phi(ctx, t) + t * phi(ctx, t)

    def cond(ctx, m, tau):
        # E Φ(t) = Φ(m/√(1+τ²));  E tΦ(t) = m·E Φ(t) + τ²·E φ(t) (Stein);
        # E φ(t) = φ(m/√(1+τ²))/√(1+τ²);  E tφ(t) = E t·e^{−t²/2}/√(2π)
        s = ctx.sqrt(1 + tau**2)
        EPhi = Phi(ctx, m / s)
        Ephi = phi(ctx, m / s) / s
        Etphi = g_t_exp(ctx, 0, ctx.mpf(-0.5), m, tau) / ctx.sqrt(2 * ctx.pi)
        return m * EPhi + tau**2 * Ephi, EPhi + Etphi

    return Sigma("gelu", f, df, (), cond)


def sin(a=1.0, b=1.0, phase=0.0, name: str = "sin", kind: str = "sin") -> Sigma:
    """a·sin(b t + phase) (``kind="cos"``: a·cos(b t + phase)); ``phase`` may be a
    function of the context (for π/4)."""

    def P(ctx):
        return phase(ctx) if callable(phase) else _num(ctx, phase)

    def f(ctx, t):
        arg = _num(ctx, b) * t + P(ctx)
        return _num(ctx, a) * (ctx.sin(arg) if kind == "sin" else ctx.cos(arg))

    def df(ctx, t):
        arg = _num(ctx, b) * t + P(ctx)
        return _num(ctx, a) * _num(ctx, b) * (ctx.cos(arg) if kind == "sin" else -ctx.sin(arg))

    def cond(ctx, m, tau):
        A, B = _num(ctx, a), _num(ctx, b)
        z = ctx.expj(P(ctx)) * g_exp(ctx, 1j * B, 0, m, tau)      # E exp(i(Bt + P))
        if kind == "sin":
            return A * z.imag, A * B * z.real
        return A * z.real, -A * B * z.imag

    return Sigma(name, f, df, (), cond)


def cos(a=1.0, b=1.0, phase=0.0) -> Sigma:
    return sin(a, b, phase, name="cos", kind="cos")


def rbf(gamma=1.0) -> Sigma:
    # √2·sin(√(2γ)·t + π/4); the frequency computed in the context
    base = sin("1", "1", lambda ctx: ctx.pi / 4)

    def w(ctx):
        return ctx.sqrt(2 * _num(ctx, gamma))

    return Sigma("rbf",
                 lambda ctx, t: ctx.sqrt(2) * base.f(ctx, w(ctx) * t),
                 lambda ctx, t: ctx.sqrt(2) * w(ctx) * base.df(ctx, w(ctx) * t),
                 (),
                 lambda ctx, m, tau: tuple(v * ctx.sqrt(2) * s for v, s in
                                           zip(base.cond(ctx, w(ctx) * m, w(ctx) * tau), (1, w(ctx)))))


def exp(a=1.0, b=1.0) -> Sigma:
    def f(ctx, t):
        return _num(ctx, a) * ctx.exp(_num(ctx, b) * t)

    def df(ctx, t):
        return _num(ctx, a) * _num(ctx, b) * ctx.exp(_num(ctx, b) * t)

    def cond(ctx, m, tau):
        e = g_exp(ctx, _num(ctx, b), 0, m, tau)
        return _num(ctx, a) * e, _num(ctx, a) * _num(ctx, b) * e

    return Sigma("exp", f, df, (), cond, growth_ok_2d=False)


def gaussian(a=1.0, b=-1.0) -> Sigma:
    def f(ctx, t):
        return _num(ctx, a) * ctx.exp(_num(ctx, b) * t * t)

    def df(ctx, t):
        return 2 * _num(ctx, a) * _num(ctx, b) * t * ctx.exp(_num(ctx, b) * t * t)

    def cond(ctx, m, tau):
        A, B = _num(ctx, a), _num(ctx, b)
        return A * g_exp(ctx, 0, B, m, tau), 2 * A * B * g_t_exp(ctx, 0, B, m, tau)

    return Sigma("gaussian", f, df, (), cond, growth_ok_2d=float(b) <= 0)


def gabor(b=0.5, w=1.0) -> Sigma:
    def f(ctx, t):
        return ctx.exp(-_num(ctx, b) * t * t) * ctx.cos(_num(ctx, w) * t)

    def df(ctx, t):
        B, W = _num(ctx, b), _num(ctx, w)
        e = ctx.exp(-B * t * t)
        return -2 * B * t * e * ctx.cos(W * t) - W * e * ctx.sin(W * t)

    def cond(ctx, m, tau):
        # σ = Re e^{iWt − Bt²};  σ' = Re (iW − 2Bt)·e^{iWt − Bt²}
        B, W = _num(ctx, b), _num(ctx, w)
        e0 = g_exp(ctx, 1j * W, -B, m, tau)
        e1 = g_t_exp(ctx, 1j * W, -B, m, tau)
        return e0.real, (1j * W * e0 - 2 * B * e1).real

    return Sigma("gabor", f, df, (), cond, growth_ok_2d=float(b) >= 0)


def polynomial(coefficients: Sequence, name: str = "polynomial") -> Sigma:
    """Σ_j m_j t^j; coefficients as numbers, decimal strings or (numerator, denominator) pairs."""
    cs = list(coefficients)

    def num(ctx, v):
        return ctx.mpf(v[0]) / ctx.mpf(v[1]) if isinstance(v, tuple) else _num(ctx, v)

    def f(ctx, t):
        out = ctx.zero
        for m_j in reversed(cs):
            out = out * t + num(ctx, m_j)
        return out

    def df(ctx, t):
        out = ctx.zero
        for j in range(len(cs) - 1, 0, -1):
            out = out * t + j * num(ctx, cs[j])
        return out

    def cond(ctx, m, tau):
        k = sum((num(ctx, cs[j]) * moment(j, m, tau) for j in range(len(cs))), ctx.zero)
        kd = sum((j * num(ctx, cs[j]) * moment(j - 1, m, tau) for j in range(1, len(cs))), ctx.zero)
        return k, kd

    return Sigma(name, f, df, (), cond)


def monomial(n: int) -> Sigma:
    return polynomial([0] * n + [1], name="monomial")


def he_coefficients(n: int) -> list[int]:
    """Integer coefficients of He_n: He_0 = 1, He_1 = t, He_{i+1} = t·He_i − i·He_{i−1}."""
    prev, cur = [1], [0, 1]
    if n == 0:
        return prev
    for i in range(1, n):
        nxt = [0] + cur
        for j, v in enumerate(prev):
            nxt[j] -= i * v
        prev, cur = cur, nxt
    return cur


def hermite(n: int) -> Sigma:
    """h_n = He_n/√(n!), the normalisation applied in the context."""
    p = polynomial([(v, 1) for v in he_coefficients(n)])
    norm = math.factorial(n)

    def f(ctx, t):
        return p.f(ctx, t) / ctx.sqrt(norm)

    def df(ctx, t):
        return p.df(ctx, t) / ctx.sqrt(norm)

    def cond(ctx, m, tau):
        k, kd = p.cond(ctx, m, tau)
        return k / ctx.sqrt(norm), kd / ctx.sqrt(norm)

    return Sigma("hermite", f, df, (), cond)


def rectified_monomial(n: int) -> Sigma:
    def f(ctx, t):
        if n == 0:
            return ctx.one if t > 0 else (ctx.zero if t < 0 else ctx.mpf(0.5))
        return t**n if t > 0 else ctx.zero

    def df(ctx, t):
        return n * t ** (n - 1) if (t > 0 and n > 0) else ctx.zero

    def cond(ctx, m, tau):
        return (trunc_moment(ctx, n, m, tau),
                n * trunc_moment(ctx, n - 1, m, tau) if n > 0 else ctx.zero)

    return Sigma("rectified_monomial", f, df, (0.0,), cond)


SELU_ALPHA = "1.6732632423543772848170429916717"
SELU_SCALE = "1.0507009873554804934193349852946"


def elu(alpha=1.0, scale=1.0, name: str = "elu") -> Sigma:
    def f(ctx, t):
        return _num(ctx, scale) * (t if t > 0 else _num(ctx, alpha) * (ctx.exp(t) - 1))

    def df(ctx, t):
        return _num(ctx, scale) * (ctx.one if t > 0 else _num(ctx, alpha) * ctx.exp(t))

    def cond(ctx, m, tau):
        # E t·1[t>0] = m Φ(m/τ) + τ φ(m/τ);  E e^t·1[t<0] = e^{m + τ²/2} Φ(−(m + τ²)/τ)
        al, sc = _num(ctx, alpha), _num(ctx, scale)
        e_neg = ctx.exp(m + tau**2 / 2) * Phi(ctx, -(m + tau**2) / tau)
        p = Phi(ctx, m / tau)
        k = m * p + tau * phi(ctx, m / tau) + al * (e_neg - (1 - p))
        return sc * k, sc * (p + al * e_neg)

    return Sigma(name, f, df, (0.0,), cond)


def selu() -> Sigma:
    return elu(SELU_ALPHA, SELU_SCALE, name="selu")


# Activations without an elementary conditional expectation: only the 2-D rule.
def _sig(ctx, t):
    return 1 / (1 + ctx.exp(-t))


def _softplus(ctx, t):
    return ctx.log(1 + ctx.exp(t)) if t < 30 else t + ctx.log(1 + ctx.exp(-t))


def tanh() -> Sigma:
    return Sigma("tanh", lambda ctx, t: ctx.tanh(t), lambda ctx, t: 1 - ctx.tanh(t) ** 2)


def sigmoid() -> Sigma:
    return Sigma("sigmoid", _sig, lambda ctx, t: _sig(ctx, t) * (1 - _sig(ctx, t)))


def softplus() -> Sigma:
    return Sigma("softplus", _softplus, _sig)


def swish() -> Sigma:
    return Sigma("swish", lambda ctx, t: t * _sig(ctx, t),
                 lambda ctx, t: _sig(ctx, t) * (1 + t * (1 - _sig(ctx, t))))


def mish() -> Sigma:
    def f(ctx, t):
        return t * ctx.tanh(_softplus(ctx, t))

    def df(ctx, t):
        th = ctx.tanh(_softplus(ctx, t))
        return th + t * (1 - th**2) * _sig(ctx, t)

    return Sigma("mish", f, df)


def softsign() -> Sigma:
    return Sigma("softsign", lambda ctx, t: t / (1 + abs(t)), lambda ctx, t: 1 / (1 + abs(t)) ** 2, (0.0,))


# ---------------------------------------------------------------------------
# Quadratures.
# ---------------------------------------------------------------------------

def _split(points, lo, hi):
    inner = sorted({p for p in points if lo < p < hi})
    return [lo] + inner + [hi]


def diag(s: Sigma, q, ctx=mp) -> tuple[float, float]:
    """(E σ(u)², E σ'(u)²), u ~ N(0, q), by 1-D quadrature split at the kinks."""
    with mp.workdps(DPS):
        q = ctx.convert(q)
        r = ctx.sqrt(q)
        marks = [ctx.convert(k) / r for k in s.kinks] + [ctx.zero]
        if ctx is fp:
            marks += list(FP_SPLITS)
        def integrand(g):
            if ctx is fp and abs(g) > FP_CUT:      # φ(g) underflows; exp-type σ would overflow
                return 0j
            return ctx.mpc(s.f(ctx, r * g) ** 2, s.df(ctx, r * g) ** 2) * phi(ctx, g)

        val = ctx.quad(integrand, _split(marks, -ctx.inf, ctx.inf))
        return float(val.real), float(val.imag)


def _corr(q1, q2, c):
    with mp.workdps(DPS):
        q1, q2, c = mp.mpf(q1), mp.mpf(q2), mp.mpf(c)
        if q1 <= 0 or q2 <= 0:
            raise ValueError("the oracle needs positive variances")
        rho = c / mp.sqrt(q1 * q2)
        if abs(rho) > 1:
            raise ValueError(f"|rho| = {rho} > 1: not a covariance")
        return q1, q2, rho


def _pair_degenerate(s: Sigma, q1, q2, rho):
    """|ρ| = 1: v = ±√(q2/q1)·u, a 1-D integral (mp)."""
    with mp.workdps(DPS):
        r1, r2 = mp.sqrt(q1), mp.sqrt(q2) * mp.sign(rho)
        pts = _split([mp.mpf(k) / r1 for k in s.kinks] + [mp.mpf(k) / r2 for k in s.kinks] + [mp.zero],
                     -mp.inf, mp.inf)
        val = mp.quad(lambda g: mp.mpc(s.f(mp, r1 * g) * s.f(mp, r2 * g),
                                       s.df(mp, r1 * g) * s.df(mp, r2 * g)) * phi(mp, g), pts)
        return float(val.real), float(val.imag)


def pair(s: Sigma, q1, q2, c, ctx=fp) -> tuple[float, float]:
    """(k, k̇) at (q1, q2, c): conditional closed form inside, tanh-sinh outside."""
    if s.cond is None:
        return pair_2d(s, q1, q2, c)
    q1m, q2m, rhom = _corr(q1, q2, c)
    if abs(rhom) == 1:
        return _pair_degenerate(s, q1m, q2m, rhom)
    with mp.workdps(DPS):
        q1, q2, rho = ctx.convert(q1m), ctx.convert(q2m), ctx.convert(rhom)
        s1, s2 = ctx.sqrt(q1), ctx.sqrt(q2)
        tau = s2 * ctx.sqrt(1 - rho * rho)
        slope = s2 * rho
        marks = [ctx.zero] + [ctx.convert(k) / s1 for k in s.kinks]
        if rho != 0:   # where the inner conditional expectation has its kink
            marks += [ctx.convert(k) / slope for k in s.kinks]
        if ctx is fp:
            marks += list(FP_SPLITS)

        def outer(g):
            if ctx is fp and abs(g) > FP_CUT:      # φ(g) underflows; exp-type σ would overflow
                return 0j
            h, hd = s.cond(ctx, slope * g, tau)
            u = s1 * g
            return ctx.mpc(s.f(ctx, u) * h, s.df(ctx, u) * hd) * phi(ctx, g)

        val = ctx.quad(outer, _split(marks, -ctx.inf, ctx.inf))
        return float(val.real), float(val.imag)


def pair_2d(s: Sigma, q1, q2, c) -> tuple[float, float]:
    """(k, k̇) by nested 2-D tanh-sinh quadrature (fp context) over [−L2D, L2D]²
    (standard-normal units), split at the kinks of σ and at the zeros of its argument."""
    if not s.growth_ok_2d:
        raise ValueError(f"{s.name}: grows too fast for the finite 2-D rule")
    ctx = fp
    q1m, q2m, rhom = _corr(q1, q2, c)
    if abs(rhom) == 1:
        return _pair_degenerate(s, q1m, q2m, rhom)
    q1, q2, rho = ctx.convert(q1m), ctx.convert(q2m), ctx.convert(rhom)
    s1, s2 = ctx.sqrt(q1), ctx.sqrt(q2)
    tau = s2 * ctx.sqrt(1 - rho * rho)
    slope = s2 * rho
    marks = [0.0] + list(s.kinks)
    L = ctx.convert(L2D)
    sq2pi = math.sqrt(2 * math.pi)

    def inner(g):
        m = slope * g
        pts = _split([(k - m) / tau for k in marks], -L, L)
        return ctx.quad(lambda z: ctx.mpc(s.f(ctx, m + tau * z), s.df(ctx, m + tau * z))
                        * (math.exp(-z * z / 2) / sq2pi), pts)

    def outer(g):
        u = s1 * g
        h = inner(g)
        return ctx.mpc(s.f(ctx, u) * h.real, s.df(ctx, u) * h.imag) * (math.exp(-g * g / 2) / sq2pi)

    val = ctx.quad(outer, _split([k / s1 for k in marks], -L, L))
    return float(val.real), float(val.imag)


def _gl_rule(edges, degree: int = 4):
    """Composite Gauss–Legendre nodes and weights (mp) on the panels between ``edges``."""
    from mpmath.calculus.quadrature import GaussLegendre

    base = GaussLegendre(mp).calc_nodes(degree, mp.prec)   # 3·2^(degree−1) nodes on [−1, 1]
    nodes, weights = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        h = (b - a) / 2
        mid = (a + b) / 2
        for t, w in base:
            nodes.append(mid + h * t)
            weights.append(h * w)
    return nodes, weights


def hermite_coefficients(s: Sigma, q, degree: int, half_width: float = 12.0,
                         panel: float = 0.5) -> list[float]:
    """r_l(q) = E[σ(√q g) He_l(g)]/√(l!), l = 0..degree, by composite Gauss–Legendre
    (24 nodes per panel of width ``panel`` on [−half_width, half_width], panel edges also
    at the kinks), He_l by its three-term recurrence; mp at ``DPS`` + 10 digits."""
    with mp.workdps(DPS + 10):
        r = mp.sqrt(mp.mpf(q))
        n_panels = int(round(2 * half_width / panel))
        edges = {-mp.mpf(half_width) + i * mp.mpf(panel) for i in range(n_panels + 1)}
        edges |= {mp.mpf(k) / r for k in s.kinks if abs(mp.mpf(k) / r) < half_width}
        nodes, weights = _gl_rule(sorted(edges))
        acc = [mp.zero] * (degree + 1)
        for g, w in zip(nodes, weights):
            fw = s.f(mp, r * g) * w * phi(mp, g)
            if fw == 0:
                continue
            h_prev, h = mp.zero, mp.one
            acc[0] += fw
            for l in range(1, degree + 1):
                h_prev, h = h, g * h - (l - 1) * h_prev      # He_l(g)
                acc[l] += fw * h
        return [float(acc[l] / mp.sqrt(mp.factorial(l))) for l in range(degree + 1)]


# ---------------------------------------------------------------------------
# Piecewise activations: pieces p(t)·e^{a t} on intervals (tests/test_piecewise.py,
# catalog entries hard_tanh, relu6, ...).  The conditional expectation of one piece,
# t ~ N(m, τ²):  E[t^j e^{a t} 1(lo < t < hi)] = e^{a m + a²τ²/2} E[s^j 1(lo < s < hi)],
# s ~ N(m + aτ², τ²) (completing the square), and the interval moments by parts:
# S_0 = Φ(B) − Φ(A), S_k = (k−1) S_{k−2} + A^{k−1}φ(A) − B^{k−1}φ(B) for z ~ N(0, 1) on (A, B).
# ---------------------------------------------------------------------------

def _interval_moment(ctx, n, m, tau, lo, hi):
    """E[t^n 1(lo < t < hi)], t ~ N(m, τ²); lo/hi may be ±inf."""
    A = (lo - m) / tau if lo != -ctx.inf else None
    B = (hi - m) / tau if hi != ctx.inf else None
    pa = phi(ctx, A) if A is not None else ctx.zero
    pb = phi(ctx, B) if B is not None else ctx.zero
    # P(A < z < B) from the tail on the side where it is small (1 − Φ(A) would lose it to rounding)
    if A is not None and A > 0:
        p0 = Phi(ctx, -A) - (Phi(ctx, -B) if B is not None else ctx.zero)
    else:
        p0 = (Phi(ctx, B) if B is not None else ctx.one) - (Phi(ctx, A) if A is not None else ctx.zero)
    S = [p0, pa - pb]
    for k in range(2, n + 1):
        S.append((k - 1) * S[k - 2] + (A ** (k - 1) * pa if A is not None else 0)
                 - (B ** (k - 1) * pb if B is not None else 0))
    return sum(math.comb(n, k) * m ** (n - k) * tau**k * S[k] for k in range(n + 1))


def piecewise(name: str, pieces) -> Sigma:
    """σ(t) = Σ_terms p(t)·e^{a t} on each piece; ``pieces`` = [(lo, hi, [(a, [m_0, m_1, …]), …])]
    with lo/hi numbers, strings or ±math.inf, in increasing order."""

    def conv(ctx, v):
        return ctx.inf if v == math.inf else (-ctx.inf if v == -math.inf else _num(ctx, v))

    def find(ctx, t):
        for lo, hi, terms in pieces:
            if conv(ctx, lo) < t <= conv(ctx, hi) or (hi == math.inf and t > conv(ctx, lo)):
                return terms
        return pieces[0][2]

    def f(ctx, t):
        return sum(sum(_num(ctx, m) * t**j for j, m in enumerate(p)) * ctx.exp(_num(ctx, a) * t)
                   for a, p in find(ctx, t))

    def df(ctx, t):
        out = 0
        for a, p in find(ctx, t):
            A = _num(ctx, a)
            poly = sum(_num(ctx, m) * t**j for j, m in enumerate(p))
            dpoly = sum(j * _num(ctx, m) * t ** (j - 1) for j, m in enumerate(p) if j)
            out += (dpoly + A * poly) * ctx.exp(A * t)
        return out

    def cond(ctx, m, tau):
        k = kd = 0
        for lo, hi, terms in pieces:
            L, H = conv(ctx, lo), conv(ctx, hi)
            for a, p in terms:
                A = _num(ctx, a)
                tilt = ctx.exp(A * m + A * A * tau * tau / 2)
                ms = m + A * tau * tau
                mom = [_interval_moment(ctx, j, ms, tau, L, H) for j in range(len(p))]
                k += tilt * sum(_num(ctx, c_) * mom[j] for j, c_ in enumerate(p))
                # σ' = (p' + a p) e^{a t}
                kd += tilt * sum(_num(ctx, c_) * (j * (mom[j - 1] if j else 0) + A * mom[j])
                                 for j, c_ in enumerate(p))
        return k, kd

    kinks = tuple(sorted({float(v) for lo, hi, _ in pieces for v in (lo, hi) if math.isfinite(float(v))}))
    return Sigma(name, f, df, kinks, cond)


INF = math.inf


def hard_tanh(lower=-1.0, upper=1.0) -> Sigma:
    return piecewise("hard_tanh", [(-INF, lower, [(0, [lower])]), (lower, upper, [(0, [0, 1])]),
                                   (upper, INF, [(0, [upper])])])


def relu6() -> Sigma:
    return piecewise("relu6", [(-INF, 0, [(0, [0])]), (0, 6, [(0, [0, 1])]), (6, INF, [(0, [6])])])


def hard_sigmoid() -> Sigma:
    """relu6(t + 3)/6 (PyTorch's definition)."""
    return piecewise("hard_sigmoid", [(-INF, -3, [(0, [0])]), (-3, 3, [(0, ["0.5", 1 / 6])]),
                                      (3, INF, [(0, [1])])])


def hard_swish() -> Sigma:
    """t·relu6(t + 3)/6."""
    return piecewise("hard_swish", [(-INF, -3, [(0, [0])]), (-3, 3, [(0, [0, "0.5", 1 / 6])]),
                                    (3, INF, [(0, [0, 1])])])


def celu(alpha=1.0) -> Sigma:
    """t for t > 0, α(e^{t/α} − 1) otherwise."""
    al = float(alpha)
    return piecewise("celu", [(-INF, 0, [(1 / al, [al]), (0, [-al])]), (0, INF, [(0, [0, 1])])])


def thresholded_relu(theta=1.0) -> Sigma:
    return piecewise("thresholded_relu", [(-INF, theta, [(0, [0])]), (theta, INF, [(0, [0, 1])])])
