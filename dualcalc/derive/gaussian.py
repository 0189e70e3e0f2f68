r"""The class p(x)·exp(βx + γx²) (docs/math.md §1, closure rules), β and γ complex.

σ(x) = Σ_i p_i(x) e^{β_i x + γ_i x²} covers polynomials, Hermite polynomials, exp,
sin, cos, sinh, cosh (through e^{±ix}, e^{±x}), Gaussians, Gabor/Morlet wavelets,
chirps cos(x²), and their sums and products.  With G = diag(γ_i, γ_j) and
a = (β_i, β_j), the Gaussian integral gives

    E[p_i(u) p_j(v) e^{aᵀz + zᵀGz}] = det(I − 2ΣG)^{−1/2} e^{½ aᵀMa} E_{N(Ma, M)}[p_i(u) p_j(v)],
    M = (I − 2ΣG)^{−1} Σ,   det(I − 2ΣG) = (1 − 2γ_i q1)(1 − 2γ_j q2) − 4γ_iγ_j c²,

the last factor a polynomial moment of a shifted Gaussian (Isserlis).  The
square root is the principal branch: when Re(Σ⁻¹ − 2G) is positive definite the
eigenvalues of I − 2Σ^{½}GΣ^{½} have positive real parts, so the branch of the
analytic continuation from G = 0 is the principal one.  k = Σ_{i,j} of these terms
is real for real σ; it is assembled in real form (cos/sin/exp/sqrt/atan2, no I).

k̇ = E[σ'(u)σ'(v)] = ∂k/∂c (σ is smooth; Price's theorem), by differentiation.

Existence: with γ* = max Re γ_i > 0 the expectation exists iff
Σ⁻¹ − 2 Re G ≻ 0, i.e. (1 − 2γ*q1)(1 − 2γ*q2) − 4γ*²c² > 0 and γ*(q1 + q2) < 1; on the
diagonal q < 1/(4γ*).  Such σ are refused (:class:`DivergentError`) when that
excludes unit variance (e.g. exp(x²)), else the dual carries these conditions as
its ``domain`` (NaN outside).  An exponent of degree > 2 with a real part that
grows (exp(x³), exp(x⁴)) diverges for every variance and is refused.
"""
from __future__ import annotations

from collections import defaultdict
from functools import lru_cache

import sympy as sp

from ..errors import DivergentError
from ..symbols import c, q1, q2, x
from . import limits
from .common import isserlis, split_re_im
from .result import Derived

_d = sp.Symbol("_dinv", real=True)  # stands for 1/det(I − 2ΣG) while assembling
_TRIG = (sp.sin, sp.cos, sp.sinh, sp.cosh, sp.tan, sp.tanh, sp.cot, sp.coth)

Term = tuple[sp.Expr, sp.Expr, tuple]  # (β, γ, polynomial coefficients m_0..m_d)


def exponent_growth_error(expo: sp.Expr) -> DivergentError | None:
    """The error for exp(P(x)) with a polynomial P that grows faster than quadratic."""
    try:
        p = sp.Poly(sp.expand(expo), x)
    except sp.PolynomialError:
        return None
    deg = p.degree()
    if deg <= 2:
        return None
    lead = complex(p.LC())
    if lead.real == 0:
        return None  # bounded oscillation, e.g. exp(I*x**3)
    if deg % 2 == 1 or lead.real > 0:
        return DivergentError(
            f"exp({sp.sstr(expo)}) grows like exp(|x|^{deg}): the Gaussian expectation E[σ(u)²] diverges for "
            "every variance (only exp(βx + γx²) with γ < 1/(4q) is integrable)")
    return None


def decompose(expr: sp.Expr) -> list[Term] | None:
    """σ as Σ p_i(x) e^{β_i x + γ_i x²}, or None when it is not of that form.

    Raises :class:`DivergentError` for exp of a polynomial of degree > 2 that grows.
    """
    return _decompose(expr)


@lru_cache(maxsize=64)
def _decompose(expr: sp.Expr) -> list[Term] | None:
    if not expr.has(x):
        return None
    allowed = (sp.exp, *_TRIG)
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.Function) and node.has(x) and not isinstance(node, allowed):
            return None
        if isinstance(node, _TRIG[4:]) and node.has(x):
            return None  # tan, tanh, cot, coth: ratios of exponentials, not in the class
    e = expr.replace(lambda n: isinstance(n, _TRIG[:4]), lambda n: n.rewrite(sp.exp))
    e = sp.expand(sp.powsimp(sp.expand(e, power_exp=False)), power_exp=False)
    groups: dict[tuple, dict[int, sp.Expr]] = defaultdict(lambda: defaultdict(lambda: sp.S.Zero))
    for term in sp.Add.make_args(e):
        limits.check()
        coeff, rest = term.as_independent(x, as_Add=False)
        expo = sp.S.Zero
        power = 0
        for f in sp.Mul.make_args(rest):
            if f.is_number:
                coeff = coeff * f
            elif isinstance(f, sp.exp):
                expo += f.args[0]
            elif f == x:
                power += 1
            elif f.is_Pow and f.base == x and f.exp.is_Integer and f.exp > 0:
                power += int(f.exp)
            elif f.is_Pow and isinstance(f.base, sp.exp) and f.exp.is_number:
                expo += f.base.args[0] * f.exp
            else:
                return None
        try:
            p = sp.Poly(sp.expand(expo), x)
        except sp.PolynomialError:
            return None
        if not all(m.is_number for m in p.all_coeffs()):
            return None
        if p.degree() > 2:
            err = exponent_growth_error(expo)
            if err is not None:
                raise err
            return None
        k0, k1, k2 = (p.coeff_monomial(x**j) for j in range(3))
        groups[(k1, k2)][power] += coeff * sp.exp(k0)
    terms: list[Term] = []
    for (beta, gamma), poly in groups.items():
        deg = max(poly)
        coeffs = tuple(sp.simplify(poly.get(j, sp.S.Zero)) for j in range(deg + 1))
        if any(m != 0 for m in coeffs):
            terms.append((beta, gamma, coeffs))
    if not terms:
        return None
    if all(b == 0 and g == 0 for b, g, _ in terms):
        return None  # a plain polynomial: the polynomial rule is simpler
    return terms


def _pair(ti: Term, tj: Term) -> tuple[sp.Expr, sp.Expr, sp.Expr, sp.Expr, sp.Expr]:
    """E[p_i(u) p_j(v) e^{β_i u + γ_i u² + β_j v + γ_j v²}] as (P, Qn, D) pieces:
    the value is D^{−1/2} e^{Qn·d} P(d) with d = 1/D (``_d``)."""
    bi, gi, pi = ti
    bj, gj, pj = tj
    D = sp.expand((1 - 2 * gi * q1) * (1 - 2 * gj * q2) - 4 * gi * gj * c**2)
    n11 = (1 - 2 * gj * q2) * q1 + 2 * gj * c**2
    n22 = (1 - 2 * gi * q1) * q2 + 2 * gi * c**2
    n12 = c
    mu1 = (n11 * bi + n12 * bj) * _d
    mu2 = (n12 * bi + n22 * bj) * _d
    Qn = (n11 * bi**2 + 2 * n12 * bi * bj + n22 * bj**2) / 2
    P = sp.S.Zero
    for k, mk in enumerate(pi):
        if mk == 0:
            continue
        for l, ml in enumerate(pj):
            if ml == 0:
                continue
            limits.check()
            s = sp.S.Zero
            for a in range(k + 1):
                for b in range(l + 1):
                    if (a + b) % 2:
                        continue
                    central = isserlis(a, b, n11 * _d, n22 * _d, n12 * _d)
                    s += sp.binomial(k, a) * sp.binomial(l, b) * mu1 ** (k - a) * mu2 ** (l - b) * central
            P += mk * ml * s
    return sp.expand(P), sp.expand(Qn), D


def _over_power(P: sp.Expr, D: sp.Expr) -> sp.Expr:
    """P(1/D) for a polynomial P in ``_d``, as one fraction num/D^K (num factored)."""
    if not P.has(_d):
        return sp.factor_terms(P)
    poly = sp.Poly(P, _d)
    K = poly.degree()
    num = sp.expand(sp.Add(*[coef * D ** (K - k) for (k,), coef in poly.terms()]))
    if num == 0:
        return sp.S.Zero
    num = sp.factor(num) if len(sp.Add.make_args(num)) <= 60 else sp.factor_terms(num)
    return num / D**K


def _real_form(P: sp.Expr, Qn: sp.Expr, D: sp.Expr) -> sp.Expr:
    """Re[D^{−1/2} e^{Qn/D} P(1/D)] with D, Qn, P complex polynomials in (q1, q2, c)."""
    Dr, Di = split_re_im(D)
    if Di == 0:
        Pr, Pi = split_re_im(P, symbols=(q1, q2, c, _d))
        Pr, Pi = _over_power(Pr, D), _over_power(Pi, D)
        Qr, Qi = split_re_im(Qn)
        Qr, Qi = Qr / D, Qi / D
        amp = 1 / sp.sqrt(D) if D != 1 else sp.S.One
        phase = Qi
    else:
        A = sp.expand(Dr**2 + Di**2)
        conj = Dr - sp.I * Di
        # 1/D = conj(D)/A: P(1/D) = Σ_k P_k conj^k / A^k
        Pc = sp.expand(P.subs(_d, conj * _d)) if P.has(_d) else P
        Pr, Pi = split_re_im(Pc, symbols=(q1, q2, c, _d))
        Pr, Pi = _over_power(Pr, A), _over_power(Pi, A)
        Qnum_r, Qnum_i = split_re_im(Qn * conj)
        Qr, Qi = Qnum_r / A, Qnum_i / A
        amp = A ** sp.Rational(-1, 4)
        phase = Qi - sp.atan2(Di, Dr) / 2
    growth = sp.exp(sp.factor_terms(sp.cancel(Qr))) if Qr != 0 else sp.S.One
    if phase == 0:
        return amp * growth * Pr
    phase = sp.factor_terms(sp.cancel(phase))
    return amp * growth * (Pr * sp.cos(phase) - Pi * sp.sin(phase))


def _conj(t: Term) -> Term:
    b, g, p = t
    return (sp.conjugate(b), sp.conjugate(g), tuple(sp.conjugate(m) for m in p))


def _dual_of_terms(terms: list[Term]) -> sp.Expr:
    """Σ_{i,j} Re E[term_i(u) term_j(v)]; for real σ the terms come in conjugate pairs and
    the pair (i, j) has the same real part as (ī, j̄), so only one of the two is computed."""
    index = {t: n for n, t in enumerate(terms)}
    conj = [index.get(_conj(t)) for t in terms]
    total = sp.S.Zero
    done = set()
    for i, ti in enumerate(terms):
        for j, tj in enumerate(terms):
            limits.check()
            if (i, j) in done:
                continue
            mirror = (conj[i], conj[j]) if conj[i] is not None and conj[j] is not None else None
            weight = 1
            if mirror is not None and mirror != (i, j):
                done.add(mirror)
                weight = 2
            done.add((i, j))
            total += weight * _real_form(*_pair(ti, tj))
    return total


def _rebuild(terms: list[Term]) -> sp.Expr:
    return sp.Add(*[sp.Add(*[m * x**j for j, m in enumerate(p)]) * sp.exp(b * x + g * x**2) for b, g, p in terms])


def existence(terms: list[Term]) -> tuple[tuple, float | None]:
    """(domain, q_max) of Σ p_i e^{β_i x + γ_i x²}: empty/None unless some Re γ_i > 0.

    Raises :class:`DivergentError` when E[σ(u)²] diverges at unit variance."""
    gmax = max(sp.re(g) for _, g, _ in terms)
    if not gmax > 0:
        return (), None
    q_max = 1 / (4 * gmax)
    if q_max <= 1:
        raise DivergentError(
            f"σ grows like exp({sp.sstr(gmax)}·x²): E[σ(u)²] is finite only for variance q < 1/(4·{sp.sstr(gmax)}) "
            f"= {float(q_max):.4g}, which excludes unit variance; rescale x (e.g. exp(γ·x**2) with γ < 1/4)")
    domain = (sp.expand((1 - 2 * gmax * q1) * (1 - 2 * gmax * q2) - 4 * gmax**2 * c**2),
              1 - gmax * (q1 + q2))
    return domain, float(q_max)


def existence_of(expr: sp.Expr) -> tuple[tuple, float | None]:
    """:func:`existence` for a formula ((), None when it is not in the class)."""
    terms = decompose(expr)
    return ((), None) if terms is None else existence(terms)


def gaussian_dual(expr: sp.Expr) -> Derived | None:
    """Closed-form dual of Σ p_i(x) e^{β_i x + γ_i x²}, else None.

    k̇ = ∂k/∂c (σ is smooth: Price's theorem), by differentiating the closed form."""
    terms = decompose(expr)
    if terms is None:
        return None
    domain, q_max = existence(terms)
    k = _dual_of_terms(terms)
    kdot = sp.diff(k, c)
    return Derived(nngp=k, ntk=kdot, rule="gaussian-class", domain=domain, q_max=q_max)
