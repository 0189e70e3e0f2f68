"""The piecewise-exponential rule (dualcalc/derive/piecewise_exp.py) against independent oracles.

Oracle (tests/oracle.py): conditional expectations of each piece given u (completing the square
for the exponential factor, interval moments by parts), integrated over u by panel quadrature
split at every breakpoint — no bivariate normal CDF, no code shared with the rule.  Formulas of
our own with several breakpoints and exponential pieces, at q from 0.05 to 30, q1 ≠ q2,
ρ ∈ [−0.99, 0.999] and the diagonal; and depth-3 networks of the named catalog activations
against the recursion run on the oracle.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import dualcalc as dc
from dualcalc.derive.piecewise_exp import breakpoints, pieces
from dualcalc.formula import parse_formula
from dualcalc.network import numpy_kernel

import oracle as O

INF = math.inf
E = "2.71828182845904523536028747135266"
TOL = 1e-10


def _hinge_spline(b0, a0, knots):
    """b0 + a0·x + Σ w·max(x − t, 0) as oracle pieces."""
    out, a, b = [], a0, b0
    edges = [-INF] + [t for t, _ in knots] + [INF]
    for i in range(len(edges) - 1):
        out.append((edges[i], edges[i + 1], [(0, [b, a])]))
        if i < len(knots):
            t, w = knots[i]
            a, b = a + w, b - w * t
    return out


#: formula, oracle pieces [(lo, hi, [(a, [m_0, m_1, ...])])] for σ = Σ (Σ m_j x^j) e^{a x}
FORMULAS = {
    "spline4": ("0.2 + 0.1*x + 0.6*max(x+2,0) + 0.5*max(x+0.5,0) - 1.5*max(x-1,0) + 0.7*max(x-2.5,0)",
                _hinge_spline(0.2, 0.1, [(-2.0, 0.6), (-0.5, 0.5), (1.0, -1.5), (2.5, 0.7)])),
    "exp_spline": ("where(x < -1, exp(x + 1) - 2, where(x < 2, x, 2 + 0.5*(x - 2)))",
                   [(-INF, -1, [(0, [-2]), (1, [E])]), (-1, 2, [(0, [0, 1])]), (2, INF, [(0, [1, "0.5"])])]),
    "poly_exp": ("where(x < -1, (x + 2)*exp(x/2), where(x < 1.5, x**2/2 - x/4, 3 - x))",
                 [(-INF, -1, [("0.5", [2, 1])]), (-1, 1.5, [(0, [0, "-0.25", "0.5"])]), (1.5, INF, [(0, [3, -1])])]),
    "exp_abs": ("exp(-abs(x))", [(-INF, 0, [(1, [1])]), (0, INF, [(-1, [1])])]),
    "jump_exp": ("where(x > 0.5, exp(-x), heaviside(x + 1)*x)",
                 [(-INF, -1, [(0, [0])]), (-1, 0.5, [(0, [0, 1])]), (0.5, INF, [(-1, [1])])]),
}

QS = (0.05, 1.0, 30.0)
RHOS = (-0.99, -0.5, 0.0, 0.7, 0.999)


def _points():
    rows = [(a, b, r * math.sqrt(a * b)) for a in QS for b in QS if a <= b for r in RHOS]
    rows += [(q, q, q) for q in QS]  # the diagonal, ρ = 1
    return np.array(rows)


def _check(act, sigma, pts):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a jump: the delta of σ' is dropped
        K, KD = act.nngp(*pts.T), act.ntk(*pts.T)
    bad = []
    for (q1, q2, c), k, kd in zip(pts, K, KD):
        ok, okd = O.diag(sigma, q1, ctx=O.fp) if q1 == q2 == c else O.pair(sigma, q1, q2, c)
        s1, s2 = O.diag(sigma, q1, ctx=O.fp), O.diag(sigma, q2, ctx=O.fp)
        e = abs(k - ok) / max(abs(ok), math.sqrt(s1[0] * s2[0]))
        ed = abs(kd - okd) / max(abs(okd), math.sqrt(s1[1] * s2[1]), 1e-300)
        if not (e <= TOL and ed <= TOL):
            bad.append(((q1, q2, c), e, ed))
    return bad


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_formula_against_oracle(name):
    formula, spec = FORMULAS[name]
    act = dc.activation(formula)
    assert act.dual.method == "closed-form" and act.dual.rule == "piecewise-exponential"
    bad = _check(act, O.piecewise(name, spec), _points())
    assert not bad, f"{name}: {len(bad)} points off: {bad[:3]}"


def test_breakpoints_and_pieces_are_exact():
    expr = parse_formula("min(max(x, -1), 1) + 0.5*max(x - 2, 0)")
    assert breakpoints(expr) == (-1.0, 1.0, 2.0)
    ps = pieces(expr)
    assert [(float(lo), float(hi)) for lo, hi, _ in ps] == [(-INF, -1.0), (-1.0, 1.0), (1.0, 2.0), (2.0, INF)]
    assert pieces(parse_formula("where(x > 0, sin(x), x)")) is None  # sin is not polynomial × exp


def test_jump_drops_the_delta():
    """σ jumps (thresholded ReLU at θ): σ' = 1[x > θ] a.e., the delta at θ is dropped (neural-tangents'
    convention), with the convention recorded; a continuous σ keeps k̇ = ∂k/∂c (Price)."""
    assert dc.activation("thresholded_relu").dual.ntk_convention == "zero-a.e."
    assert dc.activation("elu").dual.ntk_convention == "price"
    act = dc.activation("hard_tanh")
    q1, q2, c, h = 1.3, 0.7, 0.4, 1e-6
    dk = (act.nngp(q1, q2, c + h) - act.nngp(q1, q2, c - h)) / (2 * h)
    assert abs(float(dk) - float(act.ntk(q1, q2, c))) < 1e-8


def _oracle_network(sigma, X, layers):
    """The NTK-parameterisation recursion K ← W²k(K) + b², Θ ← W²k̇(K)Θ + K_new, run on the oracle."""
    n, d = X.shape
    w, b = layers[0]
    K = w**2 * X @ X.T / d + b**2
    T = K.copy()
    for w, b in layers[1:]:
        Kn, Tn = np.empty_like(K), np.empty_like(T)
        for i in range(n):
            for j in range(i, n):
                if i == j:
                    k, kd = O.diag(sigma, K[i, i], ctx=O.fp)
                else:
                    k, kd = O.pair(sigma, K[i, i], K[j, j], K[i, j])
                Kn[i, j] = Kn[j, i] = w**2 * k + b**2
                Tn[i, j] = Tn[j, i] = w**2 * kd * T[i, j] + Kn[i, j]
        K, T = Kn, Tn
    return K, T


NAMED = ["elu", "selu", "celu", "hard_tanh", "relu6", "hard_sigmoid", "hard_swish", "thresholded_relu"]


@pytest.mark.parametrize("name", NAMED)
def test_depth3_network_against_oracle_recursion(name):
    act = dc.activation(name)
    sigma = getattr(O, name)()
    rng = np.random.default_rng(5)
    X = rng.normal(size=(4, 3)) * np.array([[0.3], [1.0], [2.0], [4.0]])  # variances 0.1 … 30
    layers = [(1.5, 0.2), (1.3, 0.1), (1.2, 0.3), (0.9, 0.2)]
    net = dc.serial(dc.Dense(*layers[0]), act, dc.Dense(*layers[1]), act, dc.Dense(*layers[2]),
                    act, dc.Dense(*layers[3]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got = numpy_kernel(net, X, None)
    K, T = _oracle_network(sigma, X, layers)
    np.testing.assert_allclose(got.nngp, K, rtol=1e-10, atol=1e-10 * np.abs(K).max())
    np.testing.assert_allclose(got.ntk, T, rtol=1e-10, atol=1e-10 * np.abs(T).max())
