"""The Hermite fallback against an independent 2-D quadrature oracle (tests/hermite_oracle.py).

Errors are relative to √(k(q1,q1,q1)·k(q2,q2,q2)) (resp. the same for k̇), the scale the
series' bound refers to.  The lean test takes cheap oracle points (small variances, and the
1-D diagonal ρ = ±1 up to q = 100); the full grid q ∈ {0.01 … 100}, q1 ≠ q2, ρ ∈ [−1, 1]
runs with DUALCALC_RUN_SLOW=1.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import dualcalc as dc

import hermite_oracle as O  # tests/ is on sys.path (pytest rootdir import mode)

SMOOTH = ["tanh", "sigmoid", "atan", "x/sqrt(1+x^2)", "softplus", "swish", "mish", "logcosh"]
TOL = 1e-9


def _errors(name, pts):
    act = dc.activation(O.ACTIVATIONS[name][0])
    q1, q2, r = (np.array(v, dtype=float) for v in zip(*pts))
    ref = np.array([O.k_and_kdot(name, *p) for p in pts])
    sc = np.array([O.scales(name, a, b) for a, b in zip(q1, q2)])
    c = r * np.sqrt(q1 * q2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        k, t = act.nngp(q1, q2, c), act.ntk(q1, q2, c)
    return np.max(np.abs(k - ref[:, 0]) / sc[:, 0]), np.max(np.abs(t - ref[:, 1]) / sc[:, 1])


LEAN = [(1.0, 1.0, 1.0), (100.0, 100.0, -1.0), (100.0, 30.0, 1.0), (0.01, 0.05, 0.9), (0.5, 5.0, -0.99),
        (1.0, 0.05, 0.3)]


@pytest.mark.parametrize("name", ["tanh", "atan", "softplus", "logcosh"])
def test_lean_points(name):
    ek, et = _errors(name, LEAN)
    assert ek <= TOL and et <= TOL, (ek, et)


def test_oracle_self_convergence():
    for p in [(1.0, 1.0, 0.5), (0.05, 5.0, 0.99), (30.0, 30.0, 1.0)]:
        assert O.self_convergence("tanh", *p) < 1e-13


def test_zero_variance():
    """u ≡ 0 when q1 = 0: k = σ(0)·E[σ(v)], k̇ = σ'(0)·E[σ'(v)] (1-D quadrature here)."""
    g, w = np.polynomial.hermite_e.hermegauss(200)
    w = w / np.sqrt(2 * np.pi)
    for name in ["tanh", "sigmoid", "softplus"]:
        _, f, df = O.ACTIVATIONS[name]
        act = dc.activation(O.ACTIVATIONS[name][0])
        q2 = 1.7
        assert act.nngp(0.0, q2, 0.0) == pytest.approx(f(0.0) * np.sum(w * f(np.sqrt(q2) * g)), abs=1e-12)
        assert act.ntk(0.0, q2, 0.0) == pytest.approx(df(0.0) * np.sum(w * df(np.sqrt(q2) * g)), abs=1e-12)
        assert act.ntk(q2, 0.0, 0.0) == pytest.approx(act.ntk(0.0, q2, 0.0), abs=1e-15)
        assert act.ntk(0.0, 0.0, 0.0) == pytest.approx(df(0.0) ** 2, abs=1e-14)
    assert dc.activation("tanh").ntk(0, 1, 0) == pytest.approx(0.6057055096021591, abs=1e-12)


def test_overflowing_but_convergent():
    """log(cosh(x)) and softplus overflow float64 far out but grow like |x|: not divergent."""
    for name in ["logcosh", "softplus"]:
        act = dc.activation(O.ACTIVATIONS[name][0])
        k = act.nngp(100.0, 100.0, 100.0)
        assert k == pytest.approx(O.k_and_kdot(name, 100.0, 100.0, 1.0)[0], rel=1e-9)
    with pytest.raises(dc.errors.DivergentError):
        dc.activation("exp(x**2)").nngp(1.0, 1.0, 1.0)


@pytest.mark.skipif(not os.environ.get("DUALCALC_RUN_SLOW"), reason="set DUALCALC_RUN_SLOW=1")
@pytest.mark.parametrize("name", SMOOTH)
def test_full_grid(name):
    qs = [0.01, 0.05, 0.5, 1.0, 5.0, 30.0, 100.0]
    pairs = [(q, q) for q in qs] + list(zip(qs[:-1], qs[1:])) + [(0.01, 100.0)]
    rhos = [-1.0, -0.99, -0.5, 0.0, 0.5, 0.9, 0.99, 0.999, 1.0]
    pts = [(a, b, r) for a, b in pairs for r in rhos if not (abs(r) <= 0.5 and min(a, b) >= 30 and r != 0.5)]
    ek, et = _errors(name, pts)
    assert ek <= TOL and et <= TOL, (ek, et)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_zero_input_standard_parameterization(backend):
    """A zero input row (q = 0 at every tanh) in the standard parameterization, against the
    recursion run on the oracle: K(0, y) = 0 (tanh(0) = 0), and the bias' +1 in Θ is carried
    through each tanh by k̇(0, q_y, 0) = σ'(0)·E[σ'(√q_y g)] (1-D Gauss–Hermite here)."""
    _, f, df = O.ACTIVATIONS["tanh"]
    g, w = np.polynomial.hermite_e.hermegauss(200)
    w = w / np.sqrt(2 * np.pi)
    W = [1.3, 1.1, 0.9]
    net = dc.serial(dc.Dense(W[0], 0.0, parameterization="standard", out_dim=7), dc.activation("tanh"),
                    dc.Dense(W[1], 0.0, parameterization="standard", out_dim=5), dc.activation("tanh"),
                    dc.Dense(W[2], 0.0, parameterization="standard"))
    X = np.array([[0.0, 0.0, 0.0], [0.4, -1.2, 0.7]])
    kern = net.kernel(X, backend=backend)
    # oracle recursion for the pair (x0 = 0, x1) and the diagonal of x1
    q = float(X[1] @ X[1]) / 3
    T0, T1 = 1.0, 3 * q + 1.0          # first Dense: width_in·K⁰ + W²·0 + 1 (d = 3)
    widths = [7, 5]
    for i in range(2):
        qa = W[i] ** 2 * q
        T0 *= df(0.0) * np.sum(w * df(np.sqrt(qa) * g))
        k11, t11 = O.k_and_kdot("tanh", qa, qa, 1.0)
        T1 *= t11
        T0 = widths[i] * 0.0 + W[i + 1] ** 2 * T0 + 1.0
        T1 = widths[i] * k11 + W[i + 1] ** 2 * T1 + 1.0
        q = k11
    assert np.allclose(kern.nngp[0], 0.0, atol=1e-15)
    assert kern.ntk[0, 0] == pytest.approx(W[2] ** 2 * (W[1] ** 2 + 1.0) + 1.0, rel=1e-12)
    assert kern.ntk[0, 1] == pytest.approx(T0, rel=1e-9) and kern.ntk[1, 0] == pytest.approx(T0, rel=1e-9)
    # the network's tables meet the activation's tol = 1e-8 at each of the two tanh layers
    assert kern.ntk[1, 1] == pytest.approx(T1, rel=2e-8)
    assert kern.nngp[1, 1] == pytest.approx(W[2] ** 2 * q, rel=2e-8)
