"""The bivariate normal CDF Φ₂ in the generated kernels (codegen/mathlib.py): the Numba helper
and the CUDA __device__ function (NVRTC PTX + a CPU build of the same C source) against
dualcalc.bvn.bvn_cdf and independent references (Owen's T identity with scipy.special.owens_t,
mpmath quadrature), and networks whose duals hold ``Phi2`` (Numba vs the NumPy reference)."""
from __future__ import annotations

import ctypes
import math
import os
import shutil
import subprocess
import textwrap

import numpy as np
import pytest
import scipy.special
import sympy as sp

import dualcalc as dc
from codegen import cache, cuda_target, mathlib
from codegen.printers import CudaPrinter, NumbaPrinter, prepare
from dualcalc.bvn import Phi2, bvn_cdf, bvn_mp
from dualcalc.dual import CLOSED_FORM, Dual
from dualcalc.activation import Activation
from dualcalc.symbols import q1, q2, rho, x


def _owens_t_phi2(h, k, r):
    """Φ₂ by Owen's identity (Owen 1956): ½Φ(h) + ½Φ(k) − T(h, a_h) − T(k, a_k) − β,
    a_h = (k − rh)/(h√(1−r²)), a_k likewise, β = ½ if hk < 0 or (hk = 0 and h + k < 0)."""
    h, k, r = (np.asarray(v, dtype=np.float64) for v in np.broadcast_arrays(h, k, r))
    s = np.sqrt((1 - r) * (1 + r))
    Phi = scipy.special.ndtr
    with np.errstate(divide="ignore", invalid="ignore"):
        ah = np.where(h != 0, (k - r * h) / (h * s), np.sign(k - r * h) * np.inf)
        ak = np.where(k != 0, (h - r * k) / (k * s), np.sign(h - r * k) * np.inf)
    beta = np.where((h * k < 0) | ((h * k == 0) & (h + k < 0)), 0.5, 0.0)
    T = scipy.special.owens_t
    # T(0, a) = atan(a)/2π (owens_t accepts a = ±inf)
    out = 0.5 * Phi(h) + 0.5 * Phi(k) - T(h, ah) - T(k, ak) - beta
    return np.where((h == 0) & (k == 0), 0.25 + np.arcsin(r) / (2 * np.pi), out)  # Sheppard's formula


def _grid():
    """h, k over [−8, 8] and the tails; r over (−1, 1) with |r| → 1 and the two node switches."""
    hk = np.array([-8.0, -6.5, -4.0, -2.5, -1.0, -0.3, 0.0, 0.4, 1.1, 2.2, 3.7, 5.0, 8.0])
    rs = np.concatenate([[-0.999999, -0.99, -0.95, -0.925, -0.9, -0.75, -0.5, -0.3, -0.1, 0.0, 0.1, 0.29, 0.3, 0.6,
                          0.75, 0.8, 0.924, 0.925, 0.97, 0.999, 0.9999999]])
    H, K, R = np.meshgrid(hk, hk, rs, indexing="ij")
    return H.ravel(), K.ravel(), R.ravel()


@pytest.fixture(scope="module")
def numba_phi2():
    src = "import math\nimport numpy as np\nfrom numba import njit\n"
    src += "".join(mathlib.NUMBA_HELPERS[h] for h in ("_ncdf", "_phi2_dw", "_phi2_high", "_phi2"))
    src += textwrap.dedent("""
        @njit
        def apply(h, k, r, out):
            for i in range(h.shape[0]):
                out[i] = _phi2(h[i], k[i], r[i])
    """)
    mod = cache.load_module("test", cache.content_hash("phi2-test", src), src)

    def f(h, k, r):
        h, k, r = (np.ascontiguousarray(v, dtype=np.float64) for v in np.broadcast_arrays(h, k, r))
        out = np.empty(h.shape)
        flat = out.reshape(-1)
        mod.apply(h.reshape(-1), k.reshape(-1), r.reshape(-1), flat)
        return flat.reshape(h.shape)

    return f


def test_numba_phi2_against_owens_t_and_bvn_cdf(numba_phi2):
    """≤ 1e-15 absolute against Owen's T identity and against bvn_cdf, tails ±8, |r| → 1."""
    h, k, r = _grid()
    got = numba_phi2(h, k, r)
    # Owen's identity loses digits as |r| → 1 (T(h, a) at a → ±1 cancels); mpmath quadrature there
    owen = np.abs(r) <= 0.999
    assert np.max(np.abs(got - _owens_t_phi2(h, k, r))[owen]) < 1e-15
    mp = pytest.importorskip("mpmath")
    with mp.workdps(30):
        near = np.array([float(bvn_mp(a, b, c)) for a, b, c in zip(h[~owen][::17], k[~owen][::17], r[~owen][::17])])
    assert np.max(np.abs(got[~owen][::17] - near)) < 1e-15
    assert np.max(np.abs(got - bvn_cdf(h, k, r))) < 1e-15
    rng = np.random.default_rng(3)
    n = 20000
    h, k = rng.uniform(-8, 8, n), rng.uniform(-8, 8, n)
    r = np.concatenate([rng.uniform(-1, 1, n // 2), np.sign(rng.uniform(-1, 1, n // 2)) * (1 - 10 ** rng.uniform(-15, -1, n // 2))])
    got = numba_phi2(h, k, r)
    owen = np.abs(r) <= 0.999
    assert np.max(np.abs(got - _owens_t_phi2(h, k, r))[owen]) < 1e-15
    assert np.max(np.abs(got - bvn_cdf(h, k, r))) < 1e-15


def test_numba_phi2_mpmath_tails_and_limits(numba_phi2):
    """Deep lower tails relative to their size (mpmath), exact |r| = 1, infinite limits, NaN."""
    mp = pytest.importorskip("mpmath")
    # r >= 0: no cancellation, relative accuracy; r < 0 in the joint lower tail, Φ(h)Φ(k) and the
    # integral cancel (Genz's form, as in bvn_cdf): absolute accuracy only
    pts = [(-8.0, -8.0, 0.5), (-6.0, -7.0, 0.95), (-7.0, 2.0, 0.99), (-4.0, -4.0, 0.9999),
           (-3.0, -9.0, 0.8), (-6.0, -6.0, 0.3), (-5.0, -5.0, -0.2), (-3.0, -4.0, -0.95)]
    with mp.workdps(30):
        for h, k, r in pts:
            # Φ₂ = ∫_{−∞}^{h} φ(x) Φ((k − r x)/√(1 − r²)) dx
            s = mp.sqrt(1 - mp.mpf(r) ** 2)
            ref = mp.quad(lambda x: mp.npdf(x) * mp.ncdf((k - r * x) / s), [-mp.inf, h - 4, h - 1, h])
            got = numba_phi2(h, k, r)[()]
            tol = 1e-9 * float(ref) if r >= 0 else 1e-20
            assert abs(got - float(ref)) <= tol, (h, k, r, got, ref)
    Phi = scipy.special.ndtr
    for h, k in ((0.3, -1.2), (-2.0, 2.5), (1.0, 1.0), (-0.5, 0.5)):
        assert numba_phi2(h, k, 1.0)[()] == pytest.approx(Phi(min(h, k)), abs=3e-16)
        assert numba_phi2(h, k, -1.0)[()] == pytest.approx(max(0.0, Phi(h) - Phi(-k)), abs=3e-16)
        for r in (0.4, 0.96, -0.97):
            assert numba_phi2(np.inf, k, r)[()] == pytest.approx(Phi(k), abs=3e-16)
            assert numba_phi2(h, np.inf, r)[()] == pytest.approx(Phi(h), abs=3e-16)
            assert numba_phi2(-np.inf, k, r)[()] == 0.0 and numba_phi2(h, -np.inf, r)[()] == 0.0
    assert numba_phi2(np.inf, np.inf, 0.2)[()] == 1.0
    assert np.isnan(numba_phi2(np.nan, 0.0, 0.2)[()]) and np.isnan(numba_phi2(0.0, 0.0, np.nan)[()])


# ----------------------------------------------------------------------------------------------
# CUDA: PTX through NVRTC, and the same C source built for the CPU
def _cuda_harness() -> str:
    src = ["#include <math.h>", "#define __device__ static", "#define __forceinline__ inline"]
    for prec in ("double", "float"):
        src.append(mathlib.cuda_phi2(prec))
    src.append(textwrap.dedent("""
        extern "C" void apply_f64(const double* h, const double* k, const double* r, double* out, long n)
        { for (long i = 0; i < n; ++i) out[i] = dc_phi2_f64(h[i], k[i], r[i]); }
        extern "C" void apply_f32(const float* h, const float* k, const float* r, float* out, long n)
        { for (long i = 0; i < n; ++i) out[i] = dc_phi2_f32(h[i], k[i], r[i]); }
    """))
    return "\n".join(src)


@pytest.fixture(scope="module")
def cuda_cpu(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler for the CPU build of the CUDA source")
    d = tmp_path_factory.mktemp("phi2cuda")
    (d / "phi2.cpp").write_text(_cuda_harness())
    r = subprocess.run([cxx, "-O2", "-shared", "-fPIC", "-ffp-contract=off", str(d / "phi2.cpp"), "-o",
                        str(d / "phi2.so")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    lib = ctypes.CDLL(str(d / "phi2.so"))

    def call(prec, h, k, r):
        t = np.float64 if prec == "double" else np.float32
        h, k, r = (np.ascontiguousarray(v, dtype=t) for v in np.broadcast_arrays(h, k, r))
        out = np.empty(h.shape, t)
        ptr = lambda a: a.ctypes.data_as(ctypes.c_void_p)  # noqa: E731
        fn = lib.apply_f64 if prec == "double" else lib.apply_f32
        fn(ptr(h), ptr(k), ptr(r), ptr(out), ctypes.c_long(h.size))
        return out

    return call


def test_cuda_phi2_cpu_build(cuda_cpu, numba_phi2):
    """The CUDA C Φ₂ (the text the kernels carry) built for the CPU: double ≤ 1e-15 absolute
    against Owen's T; float ≤ 2e-6 absolute (float arithmetic, float inputs)."""
    h, k, r = _grid()
    ref = _owens_t_phi2(h, k, r)
    owen = np.abs(r) <= 0.999
    got = cuda_cpu("double", h, k, r)
    assert np.max(np.abs(got - ref)[owen]) < 1e-15
    assert np.max(np.abs(got - numba_phi2(h, k, r))) < 1e-15
    h32, k32, r32 = (v.astype(np.float32) for v in (h, k, r))
    ref32 = _owens_t_phi2(h32.astype(np.float64), k32.astype(np.float64), r32.astype(np.float64))
    assert np.max(np.abs(cuda_cpu("float", h32, k32, r32) - ref32)[owen]) < 2e-6
    assert cuda_cpu("double", np.inf, 0.3, 0.5)[()] == pytest.approx(scipy.special.ndtr(0.3), abs=2e-16)
    assert np.isnan(cuda_cpu("double", np.nan, 0.3, 0.5)[()])


# ----------------------------------------------------------------------------------------------
# printing and networks
def _step_like(a: float = 0.3) -> dc.Activation:
    """An activation whose dual holds Φ₂ (independent of the piecewise rule): the NNGP is the
    exact dual of σ = 1[x > a], P(u > a, v > a) = Φ₂(−a/√q1, −a/√q2; ρ); the 'NTK' part is an
    expression of the same shape (Φ₂ at −ρ times a tilt) that exercises the printers — both
    backends evaluate the same expressions."""
    act = Activation(x, name="step_phi2", use_cache=False)  # a fresh object; its dual is set below
    s1, s2 = sp.sqrt(q1), sp.sqrt(q2)
    k = Phi2(-a / s1, -a / s2, rho)
    kd = Phi2(0.5 * s1, 0.5 * s2, -rho) * sp.exp(-(q1 + q2) / 8) + sp.erfc(-rho * s1 * s2 / 4) / 2
    act.__dict__["dual"] = Dual(method=CLOSED_FORM, rule="test:phi2", nngp_rho=k, ntk_rho=kd)
    return act


def test_printers_phi2():
    p = NumbaPrinter()
    assert p.doprint(prepare(Phi2(q1, -q2, rho))) == "_phi2(q1, -q2, rho)" and "_phi2" in p.helpers_used
    f = CudaPrinter("float")
    assert f.doprint(prepare(Phi2(q1, q2, -rho))) == "dc_phi2_f32(q1, q2, -rho)" and "phi2" in f.helpers_used
    assert CudaPrinter("double").doprint(prepare(Phi2(q1, q2, rho))) == "dc_phi2_f64(q1, q2, rho)"
    assert f.doprint(sp.Float(1e-300)) == "1.17549435e-38f"  # a floor stays a floor in float


def _net(act):
    return dc.serial(dc.Dense(1.5, 0.1), act, dc.Dense(1.5, 0.1), act, dc.Dense(1.5, 0.1))


def test_network_with_phi2_numba_matches_numpy():
    act = _step_like()
    net = _net(act)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5)) * rng.uniform(0.4, 2.0, size=(40, 1))
    Y = rng.normal(size=(13, 5))
    for YY in (None, Y):
        ref = net.kernel(X, YY, backend="numpy")
        got = net.kernel(X, YY, backend="numba")
        for a, b in ((got.nngp, ref.nngp), (got.ntk, ref.ntk)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.max(np.abs(b)))
    src = net.source("numba")
    assert src.count("def _phi2(") == 1 and "_phi2(" in src.split("def dual_1")[1]
    assert src == net.source("numba")
    # not used: not emitted
    assert "_phi2" not in _net(dc.activation("relu")).source("numba")
    cu = net.source("cuda")
    assert cu.count("dc_phi2_f64(double h") == 1 and cu.count("dc_phi2_f32(float h") == 1
    assert "dc_phi2" not in _net(dc.activation("relu")).source("cuda")


def test_network_with_phi2_compiles_to_ptx():
    ok, why = cuda_target.nvrtc_available()
    if not ok:
        pytest.skip(why)
    net = _net(_step_like())
    for get in (("nngp", "ntk"), ("nngp",)):
        ptx = cuda_target.compile_ptx(net.source("cuda", get=get))
        assert ".entry fc_kernel_f64" in ptx and ".entry fc_kernel_f32" in ptx


def _exact(name):
    try:
        act = dc.activation(name)
    except dc.DualcalcError:
        return None
    return act if act.dual.method == CLOSED_FORM and "Phi2" in str(act.dual.nngp_rho) else None


_SLOW = pytest.mark.skipif(not os.environ.get("DUALCALC_RUN_SLOW"),
                           reason="~30 s each (a Numba compile and a PTX compile); set DUALCALC_RUN_SLOW=1")


@pytest.mark.parametrize("name", ["elu", pytest.param("hard_tanh", marks=_SLOW),
                                  pytest.param("min(max(x, -1), 1)", marks=_SLOW), pytest.param("selu", marks=_SLOW)])
def test_piecewise_exact_numba_matches_numpy(name):
    """With the piecewise-exponential rule's exact duals (with Φ₂), the generated Numba kernel
    equals the NumPy reference to ≤ 1e-12."""
    act = _exact(name)
    if act is None:
        pytest.skip(f"{name}: no exact dual with Phi2 in this tree yet")
    net = _net(act)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 6)) * rng.uniform(0.4, 2.0, size=(30, 1))
    for YY in (None, X[:9] * 0.7):
        ref = net.kernel(X, YY, backend="numpy")
        got = net.kernel(X, YY, backend="numba")
        for a, b in ((got.nngp, ref.nngp), (got.ntk, ref.ntk)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.max(np.abs(b)))
    ok, _ = cuda_target.nvrtc_available()
    if ok:
        assert ".entry fc_kernel_f64" in cuda_target.compile_ptx(net.source("cuda"))
    assert math.isfinite(float(got.nngp[0, 0]))
