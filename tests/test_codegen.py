"""Generated backends: Numba (and CUDA where possible) against the NumPy reference, the
generated source text, the content-hash cache, and the printers/inline math."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import sympy as sp

import dualcalc as dc
from codegen import cache, cuda_target, mathlib, numba_target
from codegen.printers import CudaPrinter, NumbaPrinter, dual_body, hoist_per_point, prepare
from dualcalc.symbols import c, q1, q2, rho

W, B = 1.2, 0.15


def _data(n, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * rng.uniform(0.4, 2.5, size=(n, 1))


def _net(act, depth=3, **dense):
    layers = [dc.Dense(W, B, **dense)]
    for _ in range(depth - 1):
        layers += [act, dc.Dense(W, B, **dense)]
    return dc.serial(*layers)


def _close(a, b, rtol=1e-12):
    scale = np.max(np.abs(b))
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


ACTIVATIONS = {
    "relu": lambda: dc.activation("relu"),
    "gelu": lambda: dc.activation("gelu"),
    "erf": lambda: dc.activation("erf"),
    "sin": lambda: dc.activation("sin"),
    "polynomial": lambda: dc.activation("0.3 + x - 0.5*x**2 + 0.2*x**3"),
    "tanh": lambda: dc.activation("tanh"),  # Hermite method
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_numba_matches_numpy(name):
    """≤ 1e-12 relative, K(X, X) and K(X, Y), NNGP and NTK, closed forms and Hermite."""
    act = ACTIVATIONS[name]()
    net = _net(act)
    X, Y = _data(70, seed=1), _data(33, seed=2)
    if act.dual.method == "hermite":  # moderate variances keep the series degree (and quadrature) small
        X, Y = 0.6 * X, 0.6 * Y
    for YY in (None, Y):
        ref = net.kernel(X, YY, backend="numpy")
        got = net.kernel(X, YY, backend="numba")
        _close(got.nngp, ref.nngp)
        _close(got.ntk, ref.ntk)
        if YY is None:
            np.testing.assert_array_equal(got.nngp, got.nngp.T)


def _mixed():
    return dc.serial(dc.Dense(1.4, 0.1), "gelu", dc.Dense(0.9, 0.3), "tanh", dc.Dense(1.1, 0.2), "x**2",
                     dc.Dense(0.8, 0.05))


def test_mixed_network_and_get_variants():
    """Different activations per layer (closed form, Hermite, polynomial); get= each output alone."""
    net = _mixed()
    X, Y = _data(40, seed=3), _data(9, seed=4)
    for YY in (None, Y):
        ref = net.kernel(X, YY, backend="numpy")
        both = net.kernel(X, YY, backend="numba")
        _close(both.nngp, ref.nngp)
        _close(both.ntk, ref.ntk)
        k = net.kernel(X, YY, backend="numba", get="nngp")
        t = net.kernel(X, YY, backend="numba", get=("ntk",))
        assert k.ntk is None and t.nngp is None
        np.testing.assert_array_equal(k.nngp, both.nngp)
        np.testing.assert_array_equal(t.ntk, both.ntk)


def test_standard_parameterization_and_delta_derivative():
    net = dc.serial(dc.Dense(1.3, 0.2, "standard", out_dim=16), "erf", dc.Dense(1.1, None, "standard", out_dim=8),
                    "relu", dc.Dense(0.9, 0.0, "standard", out_dim=1))  # as in tests/test_network.py
    X = _data(25, seed=5)
    for YY in (None, X[:7] * 0.5):
        ref, got = net.kernel(X, YY, backend="numpy"), net.kernel(X, YY, backend="numba")
        _close(got.nngp, ref.nngp)
        _close(got.ntk, ref.ntk)
    # sign: σ' = 0 almost everywhere, the NTK of everything before it does not pass
    sgn = dc.serial(dc.Dense(1.2, 0.1), "sign", dc.Dense(1.2, 0.1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref, got = sgn.kernel(X, backend="numpy"), sgn.kernel(X, backend="numba")
    _close(got.nngp, ref.nngp)
    _close(got.ntk, ref.ntk)


def test_float32_path():
    """float32: Gram and outputs in float32, the recursion in float64 registers."""
    net = _net(dc.activation("gelu"))
    X = _data(50, seed=6).astype(np.float32)
    got = net.kernel(X, backend="numba", dtype=np.float32)
    assert got.nngp.dtype == np.float32 and got.ntk.dtype == np.float32
    ref = net.kernel(X.astype(np.float64), backend="numpy")
    _close(got.nngp, ref.nngp, rtol=2e-6)
    _close(got.ntk, ref.ntk, rtol=2e-6)


def test_panels_out_and_progress(tmp_path, capsys):
    """block_size splits the work into row panels (same numbers up to the Gram product's
    round-off: BLAS blocks panels differently); out= fills given arrays (here np.memmap
    files); progress=True shows a bar."""
    net = _net(dc.activation("relu"))
    X, Y = _data(83, seed=7), _data(31, seed=8)
    for YY in (None, Y):
        whole = net.kernel(X, YY, backend="numba")
        n2 = X.shape[0] if YY is None else YY.shape[0]
        for bs in (1, 16, 50):
            part = net.kernel(X, YY, backend="numba", block_size=bs, progress=True)
            _close(part.nngp, whole.nngp, rtol=1e-14)
            _close(part.ntk, whole.ntk, rtol=1e-14)
        K = np.memmap(tmp_path / "k.dat", dtype=np.float64, mode="w+", shape=(83, n2))
        T = np.memmap(tmp_path / "t.dat", dtype=np.float64, mode="w+", shape=(83, n2))
        res = net.kernel(X, YY, backend="numba", block_size=20, out=(K, T))
        assert res.nngp is K and res.ntk is T
        _close(np.asarray(K), whole.nngp, rtol=1e-14)
    with pytest.raises(dc.InputError, match="out"):
        net.kernel(X, backend="numba", out=(np.empty((2, 2)), None))
    with pytest.raises(dc.InputError, match="block_size"):
        net.kernel(X, backend="numba", block_size=0)


def test_tiles_cover_each_entry_once():
    for sym in (True, False):
        n1, n2 = 97, (97 if sym else 45)
        seen = np.zeros((n1, n2), int)
        for r0 in range(0, n1, 40):
            for i0, i1, j0, j1 in numba_target.tiles_for_panel(r0, min(n1, r0 + 40), n2, sym, tr=8, tc=16):
                for i in range(i0, i1):
                    lo = max(j0, i + 1) if sym else j0
                    seen[i, lo:j1] += 1
        want = np.triu(np.ones((n1, n2), int), 1) if sym else np.ones((n1, n2), int)
        np.testing.assert_array_equal(seen, want)


# ----------------------------------------------------------------------------------------------
# the source text
def test_numba_source_readable_and_deterministic():
    net = _mixed()
    src = net.source("numba")
    assert src == net.source("numba")  # deterministic
    ast.parse(src)
    head = src.split("import math")[0]
    assert "network : serial(Dense(W_std=1.4, b_std=0.1), gelu, Dense(W_std=0.9, b_std=0.3), tanh" in head
    assert "outputs : nngp, ntk" in head
    assert "def dual_1_gelu(q1, q2, s1, s2, c, rho" in src and "def dual_3_x_2(" in src
    assert "def kernel(" in src and "@njit(parallel=True" in src
    assert "Horner" in src and "_asin(" in src and "math.asin" not in src  # the inline, vectorisable form
    assert "eval(" not in src and "exec(" not in src
    # one function per distinct dual, however many layers use it
    assert _net(dc.activation("relu"), depth=4).source().count("def dual_") == 1
    # the text shown is the text that runs: it is the cached module
    X = _data(10)
    net.kernel(X, backend="numba")
    gen = numba_target.generate(net.program())
    assert (cache.cache_dir() / "numba" / f"dc_numba_{gen.digest}.py").read_text() == src


def test_cuda_source_readable():
    net = dc.serial(dc.Dense(1.5, 0.1), "gelu", dc.Dense(1.5, 0.1), "tanh", dc.Dense(1.5, 0.1))
    src = net.source("cuda")
    assert src == net.source("cuda")
    assert 'extern "C" __global__ void fc_kernel_f64(' in src
    assert 'extern "C" __global__ void fc_kernel_f32(' in src
    assert "M_PI" not in src and "#include" not in src
    f32 = src.split("// ===== float =====")[1]
    assert "asinf(" in f32 and "sqrtf(" in f32 and "double" not in f32
    assert "0.159154943f" in f32
    with pytest.raises(dc.ParameterError, match="target"):
        net.source("opencl")


def test_compile_ptx_with_nvrtc():
    ok, why = cuda_target.nvrtc_available()
    if not ok:
        pytest.skip(why)
    nets = [_net(dc.activation("relu")), _net(dc.activation("tanh")),
            dc.serial(dc.Dense(1.3, 0.2, "standard", out_dim=4), "gelu", dc.Dense(1.0, None, "standard"), "sin",
                      dc.Dense(1.0, 0.1)),
            dc.serial(dc.Dense(1.0, 0.1), "gaussian", dc.Dense(1.0, 0.1), "sign", dc.Dense())]
    for net in nets:
        for get in (("nngp", "ntk"), ("ntk",)):
            ptx = cuda_target.compile_ptx(net.source("cuda", get=get))
            assert ".entry fc_kernel_f64" in ptx and ".entry fc_kernel_f32" in ptx
    with pytest.raises(dc.BackendError, match="NVRTC"):
        cuda_target.compile_ptx('extern "C" __global__ void broken( { }')


def test_ptx_cached_by_content(tmp_path, monkeypatch):
    ok, why = cuda_target.nvrtc_available()
    if not ok:
        pytest.skip(why)
    monkeypatch.setenv("DUALCALC_CACHE_DIR", str(tmp_path))
    gen = cuda_target.generate(_net(dc.activation("relu")).program())
    ptx = cuda_target.cached_ptx(gen)
    files = sorted(p.name for p in (tmp_path / "cuda").iterdir())
    assert files == [f"dc_cuda_{gen.digest}.cu", f"dc_cuda_{gen.digest}_{cuda_target.DEFAULT_ARCH}.ptx"]
    monkeypatch.setattr(cuda_target, "compile_ptx", lambda *a, **k: pytest.fail("compiled again"))
    assert cuda_target.cached_ptx(gen) == ptx


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["relu", "gelu", "tanh"])
def test_cuda_matches_numpy(name):
    if not cuda_target.gpu_available():
        pytest.skip(f"no GPU: {cuda_target.gpu_unavailable_reason()}")
    net = _net(ACTIVATIONS[name]())
    X, Y = _data(300, seed=1), _data(77, seed=2)
    for YY in (None, Y):
        ref = net.kernel(X, YY, backend="numpy")
        got = net.kernel(X, YY, backend="cuda")
        _close(got.nngp, ref.nngp)
        _close(got.ntk, ref.ntk)
        part = net.kernel(X, YY, backend="cuda", block_size=64)
        _close(part.nngp, ref.nngp)
        f32 = net.kernel(X, YY, backend="cuda", dtype=np.float32)
        _close(f32.nngp, ref.nngp, rtol=1e-4)


@pytest.mark.parametrize("name", ["relu", "gelu", "tanh"])
def test_cuda_source_matches_numpy_on_cpu_emulation(name):
    """The CUDA source of the same networks, compiled for the CPU by the host C++ compiler
    (cuda_target.run(emulate=True); no GPU needed): panels of rows and K(X, X) in one panel."""
    from codegen.cuda_env import cxx_compiler
    from dualcalc.reference import recursion_plan

    if cxx_compiler() is None:
        pytest.skip("no C++ compiler to emulate the CUDA source on the CPU")
    net = _net(ACTIVATIONS[name]())
    X, Y = _data(70, seed=1), _data(33, seed=2)
    for YY in (None, Y):
        ref = net.kernel(X, YY, backend="numpy")
        for bs in (None, 16):
            K, T = cuda_target.run(net.program(), recursion_plan(net, X, YY), X, YY, ("nngp", "ntk"), np.float64,
                                   block_size=bs, emulate=True)
            _close(K, ref.nngp)
            _close(T, ref.ntk)


# ----------------------------------------------------------------------------------------------
# cache
def test_cache_hit_across_processes(tmp_path):
    """A second process finds the generated module and Numba's compiled code on disk."""
    script = textwrap.dedent("""
        import json, sys
        import numpy as np
        import dualcalc as dc
        from codegen import numba_target

        net = dc.serial(dc.Dense(1.3, 0.05), "erf", dc.Dense(0.7, 0.2), "erf", dc.Dense(1.1, 0.1))
        X = np.random.default_rng(0).normal(size=(12, 3))
        net.kernel(X, backend="numba")
        mod = numba_target.load(numba_target.generate(net.program()))
        st = mod.kernel.stats
        print(json.dumps({"hits": sum(st.cache_hits.values()), "misses": sum(st.cache_misses.values()),
                          "file": mod.__file__}))
    """)
    env = dict(os.environ, DUALCALC_CACHE_DIR=str(tmp_path / "cache"))
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert runs[0]["misses"] >= 1 and runs[0]["hits"] == 0  # compiled, then saved
    assert runs[1]["hits"] >= 1 and runs[1]["misses"] == 0  # loaded, no compilation
    assert runs[0]["file"] == runs[1]["file"] and runs[0]["file"].startswith(str(tmp_path / "cache"))


def test_atomic_write_and_write_once(tmp_path, monkeypatch):
    path = tmp_path / "numba" / "dc_x.py"
    assert cache.write_once(path, "a = 1\n")
    mtime = path.stat().st_mtime_ns
    assert not cache.write_once(path, "a = 1\n")  # same content: untouched (Numba's index stays valid)
    assert path.stat().st_mtime_ns == mtime

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    target = tmp_path / "numba" / "dc_y.py"
    with pytest.raises(OSError):
        cache.write_once(target, "b = 2\n")
    assert not target.exists()
    assert sorted(p.name for p in (tmp_path / "numba").iterdir()) == ["dc_x.py"]  # no half file, no temp


def test_content_hash_covers_version(monkeypatch):
    a = cache.content_hash("text")
    monkeypatch.setattr(cache, "library_version", lambda: "999")
    assert cache.content_hash("text") != a


# ----------------------------------------------------------------------------------------------
# printers and inline math
def test_printers_forms():
    p = NumbaPrinter()
    assert p.doprint(prepare(sp.pi * c)) == "3.141592653589793*c"
    assert p.doprint(prepare(c**3)) == "(c*c*c)"
    assert p.doprint(prepare(c ** sp.Rational(-3, 2))) == "(1.0/((max(c, 0.0))*math.sqrt(max(c, 0.0))))"
    assert p.doprint(prepare(sp.sqrt(q1) * sp.sqrt(q2))) == "s1*s2"
    assert p.doprint(prepare(q1 ** sp.Rational(3, 2))) == "(s1*s1*s1)"
    assert "max(" not in p.doprint(prepare(sp.sqrt(q1 + 1)))  # known positive: no guard
    assert p.doprint(prepare(sp.acos(rho))) == "_acos(rho)" and "_acos" in p.helpers_used
    assert p.doprint(prepare(sp.cos(1) * c)).startswith("0.5403023058681398")
    f = CudaPrinter("float")
    assert f.doprint(prepare(sp.sqrt(1 - rho**2) / sp.pi)) == "0.318309886f*sqrtf(fmaxf(1.0f - (rho*rho), 0.0f))"
    assert CudaPrinter("double").doprint(prepare(sp.asin(c / sp.sqrt(q1 + 1)))).startswith("asin(fmin(fmax(")


def test_cse_shared_between_k_and_kdot():
    d = dc.activation("relu").dual
    body = dual_body(d.nngp_rho, d.ntk_rho, NumbaPrinter())
    text = "\n".join(t for _, t in body.temps) + body.k + body.kdot
    assert text.count("_acos(") == 1


def test_hoisting_per_point():
    d = dc.activation("gelu").dual
    (k, kd), hoisted = hoist_per_point([prepare(d.nngp_rho), prepare(d.ntk_rho)])
    assert "p1_0" in {str(v) for v in k.free_symbols | kd.free_symbols}
    assert not any(f.free_symbols & {q2, c, rho} for f in hoisted)
    # numerically the same function
    vals = {q1: 0.7, q2: 1.9, c: 0.55}
    full = prepare(d.nngp_rho).subs({sp.Symbol("s1", positive=True): np.sqrt(0.7),
                                     sp.Symbol("s2", positive=True): np.sqrt(1.9)}).subs(vals)
    sub = {}
    byname = {str(v): v for v in k.free_symbols | kd.free_symbols}
    for m, f in enumerate(hoisted):
        for side, qv in ((1, 0.7), (2, 1.9)):
            sub[byname[f"p{side}_{m}"]] = f.subs({q1: qv, sp.Symbol("s1", positive=True): np.sqrt(qv)})
    hk = k.subs(sub).subs({sp.Symbol("s1", positive=True): np.sqrt(0.7), sp.Symbol("s2", positive=True): np.sqrt(1.9)})
    from codegen.printers import Pos

    ev = lambda e: float(e.replace(Pos, lambda a: sp.Max(a, 0)).subs(vals).evalf())
    assert abs(ev(hk) - ev(full)) < 1e-12 * abs(ev(full))


@pytest.fixture(scope="module")
def mathmod(tmp_path_factory):
    src = "import math\nimport numpy as np\nfrom numba import njit\nfrom codegen.numba_support import bits_to_f64\n"
    src += "".join(mathlib.NUMBA_HELPERS[h] for h in ("_asin_core", "_asin", "_acos", "_exp"))
    src += textwrap.dedent("""
        @njit
        def apply(which, x, out):
            for i in range(x.shape[0]):
                out[i] = _acos(x[i]) if which == 0 else (_asin(x[i]) if which == 1 else _exp(x[i]))
    """)
    return cache.load_module("test", cache.content_hash("mathlib-test", src), src)


def test_inline_math_accuracy(mathmod):
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 30
    x = np.concatenate([np.linspace(-1, 1, 1001), 1 - np.logspace(-16, -1, 60), -1 + np.logspace(-16, -1, 60),
                        [0.5, -0.5, np.nextafter(0.5, 1), 0.0, 1.0, -1.0]])
    out = np.empty_like(x)
    for which, f in ((0, mp.acos), (1, mp.asin)):
        mathmod.apply(which, x, out)
        ref = np.array([float(f(mp.mpf(float(v)))) for v in x])
        err = np.abs(out - ref) / np.spacing(np.maximum(np.abs(ref), 1e-300))
        assert np.max(err[ref != 0]) <= 2.0, (which, np.max(err))
    mathmod.apply(0, np.array([1.0]), out[:1])
    assert out[0] == 0.0  # acos(1) exactly 0: no spurious angle on the diagonal
    xe = np.concatenate([np.linspace(-740, 709, 3001), np.linspace(-1, 1, 201)])
    oe = np.empty_like(xe)
    mathmod.apply(2, xe, oe)
    ref = np.array([float(mp.exp(mp.mpf(float(v)))) for v in xe])
    normal = ref > 2.3e-308
    assert np.max(np.abs(oe[normal] - ref[normal]) / ref[normal]) < 3e-16
    mathmod.apply(2, np.array([710.0, -800.0, 0.0]), oe[:3])
    assert oe[0] == np.inf and oe[1] == 0.0 and oe[2] == 1.0
