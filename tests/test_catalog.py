r"""Every catalog entry against the independent oracle (tests/oracle.py).

Closed-form entries: k and k̇ at ≥ 20 random (q1, q2, c) per entry (q in [0.05, 20],
|ρ| up to 0.999, fixed seeds) by the fast double-precision oracle, one point by the
20-digit oracle, and the diagonals k(q, q, q).  An error is measured relative to
max(|k|, √(k(q1,q1,q1)·k(q2,q2,q2))) — the Cauchy–Schwarz scale of the kernel (the
same for k̇ with its own diagonal) — so that kernels that cross zero are measured
sensibly.  Tolerances: 1e-10 for smooth σ, 1e-8 for σ with kinks or jumps.

Hermite-method entries: against the 2-D oracle within max(1e-7, the error the dual
reports).  Hermite coefficients against mpmath quadrature to 1e-12; the Hermite series
of closed-form activations against their closed forms to 1e-12.
"""
from __future__ import annotations

import math
import warnings
import zlib
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pytest
import sympy as sp

import dualcalc as dc
from dualcalc import hermite as H
from dualcalc.catalog import builtin_catalog_dir, builtin_entries, parse_entry
from dualcalc.dual import HermiteSeries
from dualcalc.formula import DUAL_VARIABLES, parse_formula
from dualcalc.symbols import c as C
from dualcalc.symbols import q1 as Q1
from dualcalc.symbols import q2 as Q2

import oracle as O

SMOOTH_TOL = 1e-10
KINK_TOL = 1e-8
Q_LO, Q_HI = 0.05, 20.0
RHO_MAX = 0.999


@dataclass(frozen=True)
class Case:
    name: str                      # catalog name
    params: dict = field(default_factory=dict)
    sigma: object = None           # oracle Sigma factory (no arguments)
    smooth: bool = True
    n_points: int = 20
    q_hi: float = Q_HI
    anchor: bool = False           # also one point with the 20-digit oracle

    @property
    def id(self) -> str:
        p = ",".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.name}[{p}]" if p else self.name

    def activation(self):
        return _generous(dc.activation(self.name, **self.params))


def _generous(act):
    """The symbolic derivation behind rule = "polynomial" runs under a time limit; give it
    room on a loaded machine so that a slow run does not fall back to Hermite."""
    return act.with_options(timeout=120.0) if hasattr(act, "with_options") else act


def _cases() -> list[Case]:
    defaults = [
        Case("relu", sigma=O.relu, smooth=False),
        Case("leaky_relu", sigma=O.leaky_relu, smooth=False),
        Case("abrelu", sigma=O.abrelu, smooth=False),
        Case("abs", sigma=O.absolute, smooth=False),
        Case("sign", sigma=O.sign, smooth=False),
        Case("step", sigma=O.step, smooth=False),
        Case("erf", sigma=O.erf),
        Case("sigmoid_like", sigma=O.sigmoid_like),
        Case("gelu", sigma=O.gelu),
        Case("sin", sigma=O.sin),
        Case("cos", sigma=O.cos),
        Case("rbf", sigma=O.rbf),
        Case("exp", sigma=O.exp),
        Case("gaussian", sigma=O.gaussian),
        Case("gabor", sigma=O.gabor),
        Case("monomial", sigma=lambda: O.monomial(2)),
        Case("rectified_monomial", sigma=lambda: O.rectified_monomial(2), smooth=False),
        Case("hermite", sigma=lambda: O.hermite(3)),
        Case("polynomial", sigma=lambda: O.polynomial([0.0, 1.0])),
        # the piecewise-exponential rule (breakpoints anywhere, exponential pieces): 1e-10 too
        Case("elu", sigma=O.elu),
        Case("selu", sigma=O.selu),
        Case("celu", sigma=O.celu),
        Case("hard_tanh", sigma=O.hard_tanh),
        Case("relu6", sigma=O.relu6),
        Case("hard_sigmoid", sigma=O.hard_sigmoid),
        Case("hard_swish", sigma=O.hard_swish),
        Case("thresholded_relu", sigma=O.thresholded_relu),
    ]
    defaults = [Case(c.name, c.params, c.sigma, c.smooth, 20, c.q_hi, anchor=True) for c in defaults]
    variants = [
        Case("leaky_relu", {"alpha": 0.2}, lambda: O.leaky_relu(0.2), smooth=False),
        Case("abrelu", {"a": -0.3, "b": 1.7}, lambda: O.abrelu(-0.3, 1.7), smooth=False),
        Case("erf", {"a": 1.3, "b": 0.4, "d": -0.2}, lambda: O.erf(1.3, 0.4, -0.2)),
        Case("erf", {"a": 0.5, "b": 2.5, "d": 0.5}, lambda: O.erf(0.5, 2.5, 0.5)),
        Case("sin", {"a": 2.0, "b": 1.5, "phase": 0.3}, lambda: O.sin(2.0, 1.5, 0.3)),
        Case("cos", {"a": 0.7, "b": 0.8, "phase": -1.1}, lambda: O.cos(0.7, 0.8, -1.1)),
        Case("rbf", {"gamma": 0.3}, lambda: O.rbf(0.3)),
        Case("exp", {"a": 0.5, "b": 0.6}, lambda: O.exp(0.5, 0.6)),
        Case("gaussian", {"a": 0.8, "b": -0.3}, lambda: O.gaussian(0.8, -0.3)),
        # b > 0 only where the expectation exists: 1 − 2b(q1+q2) + 4b²(q1q2 − c²) > 0, 4bq < 1
        Case("gaussian", {"a": 1.5, "b": 0.04}, lambda: O.gaussian(1.5, 0.04), q_hi=5.0),
        Case("gabor", {"b": 0.1, "w": 2.5}, lambda: O.gabor(0.1, 2.5)),
        Case("monomial", {"n": 3}, lambda: O.monomial(3)),
        Case("monomial", {"n": 0}, lambda: O.monomial(0)),
        Case("rectified_monomial", {"n": 0}, lambda: O.rectified_monomial(0), smooth=False),
        Case("rectified_monomial", {"n": 1}, lambda: O.rectified_monomial(1), smooth=False),
        Case("rectified_monomial", {"n": 3}, lambda: O.rectified_monomial(3), smooth=False),
        Case("hermite", {"n": 5}, lambda: O.hermite(5)),
        Case("hermite", {"n": 1}, lambda: O.hermite(1)),
        Case("polynomial", {"coefficients": [0.5, -1.0, 0.25, 0.1]},
             lambda: O.polynomial([0.5, -1.0, 0.25, 0.1])),
        Case("elu", {"alpha": 0.4}, lambda: O.elu(0.4)),
        Case("celu", {"alpha": 2.5}, lambda: O.celu(2.5)),
        Case("hard_tanh", {"min_val": -0.5, "max_val": 2.0}, lambda: O.hard_tanh(-0.5, 2.0)),
        Case("thresholded_relu", {"theta": -0.3}, lambda: O.thresholded_relu(-0.3)),
    ]
    return defaults + [Case(c.name, c.params, c.sigma, c.smooth, 6, c.q_hi) for c in variants]


CASES = _cases()

#: Entries without a closed form, with their oracle (2-D quadrature unless a
#: conditional closed form exists) and the number of random off-diagonal points.
HERMITE_ENTRIES = {
    "tanh": (O.tanh, 2),
    "sigmoid": (O.sigmoid, 2),
    "softplus": (O.softplus, 2),
    "swish": (O.swish, 2),
    "mish": (O.mish, 2),
    "softsign": (O.softsign, 2),
}

#: Entries with a closed form (catalog formula or rule).
CLOSED_ENTRIES = sorted({c.name for c in CASES})


def points(seed_text: str, n: int, q_hi: float = Q_HI) -> np.ndarray:
    """n points (q1, q2, c): the extremes ρ = ±0.999 at q = 20 and q = 0.05 first, then
    log-uniform q in [0.05, q_hi] and uniform ρ in [−0.999, 0.999] (seeded by the text)."""
    rng = np.random.default_rng(zlib.crc32(seed_text.encode()))
    fixed = [(q_hi, q_hi, RHO_MAX), (q_hi, Q_LO, -RHO_MAX), (Q_LO, Q_LO, RHO_MAX), (Q_LO, q_hi, 0.0)]
    rows = []
    for i in range(n):
        if i < len(fixed):
            q1, q2, r = fixed[i]
        else:
            q1, q2 = np.exp(rng.uniform(math.log(Q_LO), math.log(q_hi), 2))
            r = rng.uniform(-RHO_MAX, RHO_MAX)
        rows.append((q1, q2, r * math.sqrt(q1 * q2)))
    return np.array(rows)


def quiet(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # sign/step: σ' holds a delta
        return np.asarray(fn(*args), dtype=np.float64)


def rel_err(got, want, scale):
    return abs(got - want) / max(abs(want), scale, 1e-300)


@lru_cache(maxsize=None)
def _diag_fp(sigma, q):
    return O.diag(sigma, q, ctx=O.fp)


# ---------------------------------------------------------------------------
# The catalog files themselves.
# ---------------------------------------------------------------------------

def test_catalog_files_parse_and_are_complete():
    folder = builtin_catalog_dir()
    files = sorted(folder.glob("*.toml"))
    entries = builtin_entries()
    assert len(files) == len(entries)
    for path in files:
        entry = parse_entry(path.read_text(encoding="utf-8"), source=path.name)
        assert path.stem == entry.name
        assert entry.description and entry.references, f"{path.name}: description and references needed"
        if entry.closed_form and entry.nngp is not None:
            # the dual formulas parse with the default parameters
            values = {k: v for k, v in entry.parameters.items() if not isinstance(v, list)}
            parse_formula(entry.nngp, values, variables=DUAL_VARIABLES)
            if entry.ntk is not None:
                parse_formula(entry.ntk, values, variables=DUAL_VARIABLES)
    # every entry is checked by a test below
    assert set(entries) == set(CLOSED_ENTRIES) | set(HERMITE_ENTRIES)
    for name in CLOSED_ENTRIES:
        assert entries[name].closed_form, name
        assert _generous(dc.activation(name)).dual.method == "closed-form", name
    for name in HERMITE_ENTRIES:
        assert not entries[name].closed_form, name


def test_every_entry_uses_rho_consistently():
    """A dual written with ρ must state its ntk: d/dc of an expression in ρ needs the chain rule."""
    for entry in builtin_entries().values():
        if entry.nngp is not None and "rho" in entry.nngp:
            assert entry.ntk is not None, entry.name


@pytest.mark.parametrize("alias, name", [("silu", "swish"), ("SiLU", "swish"), ("ReLU", "relu"),
                                         ("GELU", "gelu"), ("LeakyReLU", "leaky_relu"), ("Erf", "erf"),
                                         ("heaviside", "step")])
def test_aliases(alias, name):
    assert dc.activation(alias).name == name


def test_catalog_formulas_are_the_activations():
    """σ of each entry (at its defaults) is the function its oracle evaluates."""
    t = np.linspace(-3.1, 2.9, 23)
    for case in CASES:
        act, s = case.activation(), case.sigma()
        want = np.array([float(s.f(O.mp, O.mp.mpf(float(v)))) for v in t])
        np.testing.assert_allclose(act(t), want, rtol=1e-13, atol=1e-13, err_msg=case.id)
    for name, (sigma, _) in HERMITE_ENTRIES.items():
        s = sigma()
        want = np.array([float(s.f(O.mp, O.mp.mpf(float(v)))) for v in t])
        np.testing.assert_allclose(dc.activation(name)(t), want, rtol=1e-13, atol=1e-13, err_msg=name)


def test_homogeneous_degree():
    """k(λq1, λq2, λc) = λ^p k(q1, q2, c) where the catalog says p (at the defaults)."""
    lam = 3.7
    pts = points("homogeneous", 5)
    seen = 0
    for entry in builtin_entries().values():
        p = entry.homogeneous_degree
        if p is None:
            continue
        seen += 1
        act = dc.activation(entry.name)
        k = quiet(act.nngp, *pts.T)
        k_lam = quiet(act.nngp, *(lam * pts).T)
        np.testing.assert_allclose(k_lam, lam**p * k, rtol=1e-12, err_msg=entry.name)
    assert seen >= 8


# ---------------------------------------------------------------------------
# Closed forms against the oracle.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_closed_form_against_oracle(case: Case):
    act = case.activation()
    assert act.dual.method == "closed-form"
    s = case.sigma()
    tol = SMOOTH_TOL if case.smooth else KINK_TOL
    P = points(case.id, case.n_points, case.q_hi)
    K = quiet(act.nngp, *P.T)
    KD = quiet(act.ntk, *P.T)
    assert K.shape == (len(P),) and np.all(np.isfinite(K)) and np.all(np.isfinite(KD))
    bad = []
    for (q1, q2, c), k, kd in zip(P, K, KD):
        ok, okd = O.pair(s, q1, q2, c)
        d1, d2 = _diag_fp(s, q1), _diag_fp(s, q2)
        e = rel_err(k, ok, math.sqrt(d1[0] * d2[0]))
        ed = rel_err(kd, okd, math.sqrt(d1[1] * d2[1]))
        if not (e <= tol and ed <= tol):
            bad.append(((q1, q2, c), k, ok, e, kd, okd, ed))
    assert not bad, f"{case.id}: {len(bad)} of {len(P)} points off (q1, q2, c), k, oracle, err, k', oracle', err'" \
                    f": {bad[:3]}"


@pytest.mark.parametrize("case", [c for c in CASES if c.anchor], ids=lambda c: c.id)
def test_closed_form_against_20_digit_oracle(case: Case):
    """One point per entry with the mp oracle at 20 digits (anchors the fast oracle)."""
    act = case.activation()
    s = case.sigma()
    q1, q2 = 0.7, 13.0
    c = -0.83 * math.sqrt(q1 * q2)
    ok, okd = O.pair(s, q1, q2, c, ctx=O.mp)
    d1, d2 = O.diag(s, q1), O.diag(s, q2)
    tol = SMOOTH_TOL if case.smooth else KINK_TOL
    assert rel_err(float(quiet(act.nngp, q1, q2, c)), ok, math.sqrt(d1[0] * d2[0])) <= tol
    assert rel_err(float(quiet(act.ntk, q1, q2, c)), okd, math.sqrt(d1[1] * d2[1])) <= tol


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_closed_form_diagonal(case: Case):
    """k(q, q, q) = E σ(u)², k̇(q, q, q) = E σ'(u)², u ~ N(0, q)."""
    act = case.activation()
    s = case.sigma()
    tol = SMOOTH_TOL if case.smooth else KINK_TOL
    for q in (Q_LO, 0.7, case.q_hi):
        want, want_d = _diag_fp(s, q)
        got = float(quiet(act.nngp, q, q, q))
        got_d = float(quiet(act.ntk, q, q, q))
        assert rel_err(got, want, 0.0) <= tol, (case.id, q, got, want)
        assert rel_err(got_d, want_d, 0.0) <= tol or (want_d == 0 and got_d == 0), (case.id, q, got_d, want_d)


@pytest.mark.parametrize("name", ["sign", "step"])
def test_delta_derivative_convention(name):
    """σ' of sign/step is a delta: the NTK dual is 0 (σ' = 0 a.e.), with a warning."""
    act = dc.activation(name)
    assert act.dual.ntk_convention == "zero-a.e."
    with pytest.warns(RuntimeWarning, match="delta"):
        out = act.ntk(np.array([1.0, 2.0]), np.array([1.0, 0.5]), np.array([0.3, -0.9]))
    assert np.array_equal(out, np.zeros(2))


def test_gelu_ntk_is_dk_dc():
    """The explicit GeLU ntk equals ∂k/∂c of its nngp (Price's theorem)."""
    act = dc.activation("gelu")
    dk = sp.lambdify((Q1, Q2, C), sp.diff(act.dual.nngp, C), "numpy")
    for q1, q2, c in points("gelu-price", 8):
        assert math.isclose(float(act.ntk(q1, q2, c)), float(dk(q1, q2, c)), rel_tol=1e-12)


def test_gabor_is_the_gaussian_integral():
    """The Gabor closed form at ρ = 0 factorises: k = E[σ(u)]·E[σ(v)], E e^{−bu²}cos(wu) = e^{−w²q/(2(1+2bq))}/√(1+2bq)."""
    b, w = 0.5, 1.0
    act = dc.activation("gabor")
    for q1, q2 in [(0.3, 2.0), (5.0, 11.0)]:
        m = [math.exp(-w * w * q / (2 * (1 + 2 * b * q))) / math.sqrt(1 + 2 * b * q) for q in (q1, q2)]
        assert math.isclose(float(act.nngp(q1, q2, 0.0)), m[0] * m[1], rel_tol=1e-13)


# ---------------------------------------------------------------------------
# Hermite-method entries against the oracle.
# ---------------------------------------------------------------------------

def _reported_errors(act) -> tuple[float, float]:
    est = getattr(act.dual, "error_estimates", None)
    if isinstance(est, dict):
        return float(est.get("nngp", act.dual.error_estimate)), float(est.get("ntk", act.dual.error_estimate))
    e = float(act.dual.error_estimate)
    return e, e


@pytest.mark.parametrize("name", sorted(HERMITE_ENTRIES))
def test_hermite_entry_against_oracle(name):
    sigma, n_points = HERMITE_ENTRIES[name]
    s = sigma()
    act = dc.activation(name)
    P = points(name, n_points)
    diag_q = np.array([Q_LO, 1.0, Q_HI])
    allp = np.vstack([P, np.stack([diag_q, diag_q, diag_q], axis=1)])
    K = quiet(act.nngp, *allp.T)
    KD = quiet(act.ntk, *allp.T)
    err_k, err_t = _reported_errors(act)
    tol_k, tol_t = max(1e-7, err_k), max(1e-7, err_t)
    bad = []
    for (q1, q2, c), k, kd in zip(allp, K, KD):
        d1, d2 = _diag_fp(s, q1), _diag_fp(s, q2)
        if q1 == q2 == c:
            ok, okd = d1
        else:
            ok, okd = O.pair(s, q1, q2, c)
        e = abs(k - ok) / math.sqrt(d1[0] * d2[0])
        ed = abs(kd - okd) / math.sqrt(d1[1] * d2[1])
        if not (e <= tol_k and ed <= tol_t):
            bad.append(((q1, q2, c), e, ed))
    assert not bad, f"{name}: reported errors nngp {err_k:.1e}, ntk {err_t:.1e}; off: {bad}"


# ---------------------------------------------------------------------------
# Hermite coefficients and series.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, sigma", [("relu", O.relu), ("tanh", O.tanh), ("gelu", O.gelu),
                                         ("elu", O.elu), ("softsign", O.softsign)])
@pytest.mark.parametrize("q", [0.3, 1.0, 7.0])
def test_hermite_coefficients_against_quadrature(name, sigma, q):
    degree = 12
    s = sigma()
    got = dc.activation(name).hermite(degree, q)
    want = np.array(O.hermite_coefficients(s, q, degree))
    scale = math.sqrt(_diag_fp(s, q)[0])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * max(1.0, scale))


@pytest.mark.parametrize("name, params", [("sin", {}), ("sin", {"b": 1.5, "phase": 0.3}),
                                          ("gaussian", {}), ("gabor", {})])
def test_hermite_series_reproduces_closed_form(name, params):
    act = dc.activation(name, **params)
    qs = np.array([0.05, 0.3, 1.0, 2.5, 5.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        R, _ = HermiteSeries(act.function, act.kinks, tol=1e-14).table(qs)
    i, j = (a.ravel() for a in np.meshgrid(range(qs.size), range(qs.size)))
    rho = np.linspace(-RHO_MAX, RHO_MAX, i.size)
    q1, q2 = qs[i], qs[j]
    c = rho * np.sqrt(q1 * q2)
    k = H.series_nngp(R[i], R[j], rho)
    kd = H.series_ntk(R[i], R[j], rho, np.sqrt(q1 * q2))
    K, KD = act.nngp(q1, q2, c), act.ntk(q1, q2, c)
    scale = np.sqrt(act.nngp(q1, q1, q1) * act.nngp(q2, q2, q2))
    scale_d = np.sqrt(act.ntk(q1, q1, q1) * act.ntk(q2, q2, q2))
    assert np.max(np.abs(k - K) / np.maximum(np.abs(K), scale)) <= 1e-12
    assert np.max(np.abs(kd - KD) / np.maximum(np.abs(KD), scale_d)) <= 1e-12


# ---------------------------------------------------------------------------
# The oracle itself: the two quadratures agree.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("sigma, params", [(O.relu, ()), (O.gelu, ()), (O.sin, (1.3, 0.9, 0.2)),
                                           (O.rectified_monomial, (2,)), (O.elu, ())],
                         ids=["relu", "gelu", "sin", "rectified_monomial", "elu"])
def test_oracle_conditional_matches_2d(sigma, params):
    s = sigma(*params)
    q1, q2, c = 2.3, 0.4, -0.71 * math.sqrt(2.3 * 0.4)
    a = O.pair(s, q1, q2, c)
    b = O.pair_2d(s, q1, q2, c)
    scale = O.diag(s, q1, ctx=O.fp), O.diag(s, q2, ctx=O.fp)
    assert abs(a[0] - b[0]) <= 1e-11 * math.sqrt(scale[0][0] * scale[1][0])
    assert abs(a[1] - b[1]) <= 1e-11 * math.sqrt(scale[0][1] * scale[1][1])
