"""JAX / neural-tangents export (dualcalc.jax_source): act.to_stax(), net.to_stax(), net.source("jax").

The oracle is neural-tangents 0.6.5 itself: its ``stax.serial`` / ``stax.Dense`` recursion runs
our printed ``nngp_fn``/``d_nngp_fn`` and must reproduce dualcalc's float64 NumPy kernels, and
its finite ``apply_fn`` must be σ (compared with dualcalc's NumPy σ and a hand-written forward
pass).  The import-isolation and missing-JAX checks run in subprocesses.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sympy as sp

import dualcalc as dc
from dualcalc.errors import BackendError, ParameterError
from dualcalc.jax_source import activation_functions, hermite_table, jax_code
from dualcalc.symbols import c, q1, q2, rho, x

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=ENV, timeout=300)


# -- without JAX -----------------------------------------------------------------------------
def test_import_dualcalc_and_jax_source_text_do_not_import_jax():
    r = _run("""
        import sys
        import dualcalc as dc
        net = dc.serial(dc.Dense(1.5, 0.1), dc.activation("x*erf(x)"), dc.Dense(1.0))
        text = net.source("jax")
        assert "def make_stax" in text and "jax.scipy.special.erf" in text
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "jaxlib", "neural_tangents"))
        assert not bad, bad
        print("ok")
    """)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def test_missing_jax_is_a_backend_error_naming_the_extra():
    r = _run("""
        import sys
        sys.modules["jax"] = None  # import jax now fails as if it were not installed
        import dualcalc as dc
        from dualcalc.errors import BackendError
        for call in (lambda: dc.activation("relu").to_stax(),
                     lambda: dc.serial(dc.Dense(1.0), dc.activation("relu"), dc.Dense(1.0)).to_stax()):
            try:
                call()
            except BackendError as err:
                assert "dualcalc[jax]" in str(err), err
            else:
                raise AssertionError("no BackendError")
        print("ok")
    """)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def test_printer_safe_forms():
    """Piecewise, Heaviside, Max/Min as where; acos/asin of anything but ρ clipped; roots of
    round-off-negative expressions guarded; numbers as float64 literals."""
    _, out = jax_code(sp.Piecewise((x, x > 0), (sp.exp(x) - 1, True)))
    assert out.startswith("jax.numpy.where(") and "select" not in out
    _, out = jax_code(sp.Heaviside(x) + sp.Max(x, 0) + sp.Min(x, 1))
    assert "heaviside" not in out and "maximum" not in out and "minimum" not in out
    assert out.count("jax.numpy.where(") == 4
    _, out = jax_code(sp.acos(rho) + sp.asin(c / sp.sqrt(q1 * q2)))
    assert "arccos(rho)" in out and "arcsin(jax.numpy.clip(" in out
    lines, out = jax_code(sp.sqrt(q1 * q2 - c**2))
    assert "jax.numpy.sqrt(jax.numpy.maximum(" in out + "".join(b for _, b in lines)
    _, out = jax_code(sp.sqrt(q1) * sp.Rational(1, 3))
    assert "jax.numpy.sqrt(q1)" in out and repr(1 / 3) in out
    with pytest.raises(BackendError, match="no JAX counterpart"):
        jax_code(sp.besselj(0, x))


def test_source_options_and_layers_checked():
    net = dc.serial(dc.Dense(1.5, 0.1), dc.activation("relu"), dc.Dense(1.0))
    with pytest.raises(ParameterError, match="width and q_range"):
        net.source("jax", block_size=3)
    with pytest.raises(ParameterError, match="width"):
        net.source("jax", width=0)
    text = net.source("jax", width=64)
    assert "stax.Dense(64, W_std=1.5, b_std=0.1" in text and "stax.Dense(1, W_std=1.0" in text
    with pytest.raises(ParameterError, match="q_range"):
        dc.serial(dc.Dense(1.0), dc.activation("tanh"), dc.Dense(1.0)).source("jax", q_range=(1.0, 0.5))


# -- against neural-tangents -----------------------------------------------------------------
jax = pytest.importorskip("jax")
stax = pytest.importorskip("neural_tangents").stax
jax.config.update("jax_enable_x64", True)

RNG = np.random.default_rng(7)
X = RNG.standard_normal((7, 4))
Y = RNG.standard_normal((5, 4))
GET = ("nngp", "ntk")


def _net(act):
    return dc.serial(dc.Dense(1.5, 0.1), act, dc.Dense(1.2, 0.2), act, dc.Dense(0.9, 0.05))


def _diffs(kernel_fn, net):
    """max |nt − dualcalc| over NNGP/NTK and K(X, X)/K(X, Y), and the largest |K|."""
    kf = jax.jit(kernel_fn, static_argnames="get")
    worst, scale = 0.0, 0.0
    for B in (None, Y):
        ref = net.kernel(X, B, backend="numpy")
        got = kf(X, B, get=GET)
        for g in GET:
            a, b = np.asarray(getattr(got, g)), getattr(ref, g)
            assert a.shape == b.shape and a.dtype == np.float64
            worst, scale = max(worst, float(np.max(np.abs(a - b)))), max(scale, float(np.max(np.abs(b))))
    return worst, scale


# relu, gelu, erf (catalog closed forms), x*erf(x) and a cubic (derived, not in the catalog),
# leaky_relu / abs / max(x,0)^2 (piecewise; the last derived), sign (zero-a.e. k̇).
CLOSED = ["relu", "gelu", "erf", "x*erf(x)", "0.1*x**3 - 0.5*x", "leaky_relu", "abs", "max(x, 0)**2", "sign"]


@pytest.mark.parametrize("formula", CLOSED)
def test_activation_layers_match_dualcalc_kernels(formula):
    act = dc.activation(formula)
    assert act.dual.method == "closed-form"
    net = _net(act)
    layer = act.to_stax()
    _, _, kernel_fn = stax.serial(stax.Dense(256, W_std=1.5, b_std=0.1), layer,
                                  stax.Dense(256, W_std=1.2, b_std=0.2), layer,
                                  stax.Dense(1, W_std=0.9, b_std=0.05))
    worst, scale = _diffs(kernel_fn, net)
    print(f"{formula}: max |nt - dualcalc| = {worst:.2e} (max |K| = {scale:.3g})")
    assert worst <= 1e-10


@pytest.mark.parametrize("formula", ["x*erf(x)", "leaky_relu"])
def test_network_to_stax_matches_dualcalc_kernels(formula):
    net = _net(dc.activation(formula))
    worst, _ = _diffs(net.to_stax()[2], net)
    assert worst <= 1e-10


def test_hermite_tanh_within_its_stated_error():
    """Both sides are series: the export (table error ``tab.error``) and dualcalc's own kernel
    (``dual.error_estimate``), each relative and per activation layer (one hidden layer here)."""
    act = dc.activation("tanh").with_options(q_range=(0.05, 10.0), tol=1e-10)
    assert act.dual.method == "hermite"
    tab = hermite_table(act.dual, act.q_range)
    assert tab.interp_error <= 1e-13 and tab.error < 1e-9
    stated = tab.error + act.dual.error_estimate
    net = dc.serial(dc.Dense(1.5, 0.1), act, dc.Dense(0.9, 0.05))  # its variances stay inside q_range (outside, the exported functions give NaN)
    worst, scale = _diffs(net.to_stax()[2], net)
    print(f"tanh: max |nt - dualcalc| / max |K| = {worst / scale:.2e}, stated {stated:.1e}")
    assert worst <= stated * scale
    # outside the table's range the functions refuse (NaN) rather than extrapolate
    _, nngp_fn, _ = activation_functions(act)
    assert np.isnan(float(nngp_fn(0.1, 20.0, 1.0))) and np.isfinite(float(nngp_fn(0.1, 2.0, 1.0)))


@pytest.mark.parametrize("formula", ["relu", "leaky_relu", "abs", "step", "max(x, 0)**2", "x*erf(x)"])
def test_apply_fn_of_a_layer_is_sigma(formula):
    act = dc.activation(formula)
    init_fn, apply_fn, _ = act.to_stax()
    z = np.concatenate([np.linspace(-3, 3, 41), [0.0]]).reshape(6, 7)
    _, params = init_fn(jax.random.PRNGKey(0), z.shape)
    np.testing.assert_allclose(np.asarray(apply_fn(params, z)), act.function(z), rtol=1e-15, atol=1e-15)


def test_finite_network_of_to_stax_runs_the_same_forward_pass():
    act = dc.activation("gelu")
    net = dc.serial(dc.Dense(1.5, 0.1), act, dc.Dense(0.9, 0.05))
    init_fn, apply_fn, _ = net.to_stax(width=32)
    _, params = init_fn(jax.random.PRNGKey(1), X.shape)
    out = np.asarray(apply_fn(params, X))
    (W1, b1), _, (W2, b2) = [tuple(np.asarray(a) for a in p) if p else None for p in params]
    # NTK parameterization: h = W_std/√fan_in · x W + b_std · b
    h = act.function(1.5 / np.sqrt(X.shape[1]) * X @ W1 + 0.1 * b1)
    np.testing.assert_allclose(out, 0.9 / np.sqrt(32) * h @ W2 + 0.05 * b2, rtol=1e-12, atol=1e-12)
    assert out.shape == (X.shape[0], 1)
