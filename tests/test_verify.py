"""The quadrature oracle of dualcalc.verify against Gaussian moments known exactly."""
import math

import numpy as np
import pytest

import dualcalc as dc
from dualcalc.verify import (OracleError, derivative_function, expectation_1d, expectation_2d,
                             verify_activation)

PTS = [(0.7, 1.9, 0.55), (1.0, 1.0, -0.8), (2.0, 0.5, 0.999 * 1.0), (1.3, 1.3, 1.3), (0.4, 2.2, 0.0)]


def ident(t):
    return t


@pytest.mark.parametrize("q1,q2,c", PTS)
def test_moments_of_polynomials(q1, q2, c):
    assert expectation_2d(ident, ident, q1, q2, c) == pytest.approx(c, abs=1e-13)
    sq = np.square
    assert expectation_2d(sq, sq, q1, q2, c) == pytest.approx(q1 * q2 + 2 * c * c, rel=1e-12)
    cube = lambda t: t**3  # noqa: E731
    assert expectation_2d(cube, cube, q1, q2, c) == pytest.approx(6 * c**3 + 9 * c * q1 * q2, rel=1e-11, abs=1e-13)


@pytest.mark.parametrize("q1,q2,c", PTS)
def test_exponential_and_cosine(q1, q2, c):
    # E[e^u e^v] = exp((q1 + q2)/2 + c); E[cos u cos v] = e^{-(q1+q2)/2} cosh c
    assert expectation_2d(np.exp, np.exp, q1, q2, c) == pytest.approx(math.exp((q1 + q2) / 2 + c), rel=1e-12)
    assert expectation_2d(np.cos, np.cos, q1, q2, c) == pytest.approx(math.exp(-(q1 + q2) / 2) * math.cosh(c),
                                                                      rel=1e-12)


@pytest.mark.parametrize("q1,q2,c", PTS)
def test_kinked_functions_are_exact(q1, q2, c):
    """Panels split at the kinks: step functions and ReLU to round-off (Cho & Saul; Sheppard)."""
    rho = c / math.sqrt(q1 * q2)
    theta = math.acos(max(-1.0, min(1.0, rho)))
    relu = lambda t: np.maximum(t, 0.0)  # noqa: E731
    step = lambda t: (t > 0).astype(float)  # noqa: E731
    k_relu = math.sqrt(q1 * q2) / (2 * math.pi) * (math.sin(theta) + (math.pi - theta) * math.cos(theta))
    assert expectation_2d(relu, relu, q1, q2, c, kinks=(0.0,)) == pytest.approx(k_relu, rel=1e-12, abs=1e-14)
    assert expectation_2d(step, step, q1, q2, c, kinks=(0.0,)) == pytest.approx((math.pi - theta) / (2 * math.pi),
                                                                                 rel=1e-12, abs=1e-14)
    # a kink away from zero: P(u > a, v > a) against scipy's bivariate normal CDF
    from scipy.stats import multivariate_normal

    a = 0.37
    shifted = lambda t: (t > a).astype(float)  # noqa: E731
    if abs(rho) < 0.999:
        ref = multivariate_normal(mean=[0, 0], cov=[[q1, c], [c, q2]]).cdf([-a, -a])  # symmetry: P(u<-a, v<-a)
        assert expectation_2d(shifted, shifted, q1, q2, c, kinks=(a,)) == pytest.approx(ref, rel=1e-7)


def test_one_dimensional_and_degenerate_cases():
    assert expectation_1d(np.square, 1.7) == pytest.approx(1.7, rel=1e-13)
    assert expectation_2d(np.cos, np.exp, 0.0, 1.0, 0.0) == pytest.approx(math.exp(0.5), rel=1e-13)
    with pytest.raises(ValueError):
        expectation_2d(ident, ident, 1.0, 1.0, 1.5)


def test_divergent_integrals_are_refused():
    with pytest.raises(OracleError, match="does not converge"):
        expectation_2d(lambda t: np.exp(t * t), lambda t: np.exp(t * t), 1.0, 1.0, 0.5)


def test_derivative_drops_deltas():
    d = derivative_function(dc.activation("sign(x)").expr)
    assert np.all(d(np.linspace(-2, 2, 9)) == 0.0)
    d = derivative_function(dc.activation("relu").expr)
    np.testing.assert_array_equal(d(np.array([-1.0, 2.0])), [0.0, 1.0])


def test_verify_passes_correct_duals_and_catches_a_wrong_one():
    good = verify_activation(dc.activation("relu"))
    assert good.passed and good.nngp_error < 1e-12 and good.ntk_error < 1e-12
    assert len(good.points) == len(good.nngp_values) == len(good.nngp_oracle)

    class Wrong:  # the ReLU dual scaled by 1.001: a subtle error must not pass
        def __init__(self, act):
            self._a = act
            self.dual, self.function, self.kinks, self.expr = act.dual, act.function, act.kinks, act.expr

        def nngp(self, *a):
            return 1.001 * self._a.nngp(*a)

        def ntk(self, *a):
            return self._a.ntk(*a)

    bad = verify_activation(Wrong(dc.activation("relu")))
    assert not bad.passed
    assert 1e-4 < bad.nngp_error < 1e-2 and bad.ntk_error < 1e-12
