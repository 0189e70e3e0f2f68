"""Branch layers (FanOut, parallel, FanInSum, FanInProd, FanInConcat, Identity, repeat) and LayerNorm.

Oracles: neural-tangents' ``kernel_fn`` for the same networks (float64, 1e-10 relative), its
``ElementwiseNumerical`` at a degree where it is accurate for a Hermite-method activation; the
generated Numba kernels against the NumPy reference (which neural-tangents checks); finite
networks are in tests/test_branches_mc.py.
"""
from __future__ import annotations

import numpy as np
import pytest

import dualcalc as dc
from codegen import cuda_target
from dualcalc.cli import parse_net_spec
from dualcalc.errors import InputError, ParameterError

W, B = 1.5, 0.1
#: neural-tangents' reminder that FanIn layers assume independent branches (true of these nets)
pytestmark = pytest.mark.filterwarnings("ignore:.*FanIn.*:UserWarning")


def _data(n, d=4, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * scale * rng.uniform(0.5, 1.5, size=(n, 1))


X, Y = _data(7, seed=1, scale=0.8), _data(5, seed=2, scale=1.3)


def _block(act, w=W, b=B):
    return dc.serial(dc.FanOut(2), dc.parallel(dc.serial(act, dc.Dense(w, b), act, dc.Dense(w, b)), dc.Identity()),
                     dc.FanInSum())


def _rel(mine, ref):
    ref = np.asarray(ref)
    return float(np.max(np.abs(mine - ref)) / np.max(np.abs(ref)))


# ----------------------------------------------------------------------------------------------
# neural-tangents
@pytest.fixture(scope="module")
def stax(neural_tangents):
    return neural_tangents.stax


def _pairs(stax):
    return {"relu": (dc.activation("relu"), stax.Relu()), "erf": (dc.activation("erf"), stax.Erf()),
            "gelu": (dc.activation("gelu"), stax.Gelu(approximate=False))}


def _nets(stax, name):
    """(dualcalc network, neural-tangents kernel_fn) of each kind of branch, for activation ``name``."""
    act, nt = _pairs(stax)[name]
    s = stax
    nblock = s.serial(s.FanOut(2), s.parallel(s.serial(nt, s.Dense(8, W, B), nt, s.Dense(8, W, B)), s.Identity()),
                      s.FanInSum())
    return {
        "residual": (dc.serial(dc.Dense(W, B), dc.repeat(_block(act), 2), dc.LayerNorm(), act, dc.Dense(W, B)),
                     s.serial(s.Dense(8, W, B), s.repeat(nblock, 2), s.LayerNorm(), nt, s.Dense(1, W, B))),
        "prod": (dc.serial(dc.Dense(W, B), dc.FanOut(3), dc.parallel(act, dc.serial(act, dc.Dense(W, B), act),
                                                                     dc.Identity()), dc.FanInProd(), dc.Dense(W, B)),
                 s.serial(s.Dense(8, W, B), s.FanOut(3), s.parallel(nt, s.serial(nt, s.Dense(8, W, B), nt), s.Identity()),
                          s.FanInProd(), s.Dense(1, W, B))),
        "layernorm": (dc.serial(dc.Dense(W, B), dc.LayerNorm(eps=0.1), act, dc.Dense(W, B), dc.LayerNorm(), act,
                                dc.Dense(W, B)),
                      s.serial(s.Dense(8, W, B), s.LayerNorm(eps=0.1), nt, s.Dense(8, W, B), s.LayerNorm(), nt,
                               s.Dense(1, W, B))),
        "concat": (dc.serial(dc.Dense(W, B), dc.FanOut(2), dc.parallel(dc.serial(act, dc.Dense(W, B, out_dim=8)),
                                                                       dc.serial(act, dc.Dense(1.1, 0.2, out_dim=24))),
                             dc.FanInConcat(), dc.Dense(W, B), act, dc.Dense(W, B)),
                   s.serial(s.Dense(8, W, B), s.FanOut(2), s.parallel(s.serial(nt, s.Dense(8, W, B)),
                                                                      s.serial(nt, s.Dense(24, 1.1, 0.2))),
                            s.FanInConcat(), s.Dense(8, W, B), nt, s.Dense(1, W, B))),
    }


#: The networks also run through the generated Numba kernels (each compiles once, ~5 s).
NUMBA = {("relu", "residual"), ("gelu", "prod"), ("erf", "layernorm"), ("relu", "concat")}


@pytest.mark.parametrize("name", ["relu", "erf", "gelu"])
def test_neural_tangents_branches(stax, name):
    """Residual (repeat of a FanOut/parallel/Identity/FanInSum block, then LayerNorm), FanInProd of
    three branches, LayerNorm with eps, FanInConcat of unequal widths: NNGP and NTK, K(X, X) and
    K(X, Y), agree with neural-tangents to 1e-10 relative (numpy; numba for some)."""
    failures = []
    for kind, (net, (_, _, kfn)) in _nets(stax, name).items():
        for YY in (None, Y):
            ref = kfn(X, YY, ("nngp", "ntk"))
            for backend in ("numpy", "numba") if (name, kind) in NUMBA else ("numpy",):
                k = net.kernel(X, YY, backend=backend)
                for what, mine, theirs in (("nngp", k.nngp, ref.nngp), ("ntk", k.ntk, ref.ntk)):
                    theirs = np.asarray(theirs)
                    off = ~np.eye(*mine.shape, dtype=bool) if YY is None else np.ones(mine.shape, bool)
                    err = float(np.max(np.abs(mine - theirs)[off]) / np.max(np.abs(theirs)))
                    # neural-tangents' own diagonal after a FanInSum is off by up to ~5e-9 (its
                    # angle from a round-off ρ = 1 - 1e-16; ours is exact: the next test)
                    derr = 0.0 if YY is not None else _rel(np.diag(mine), np.diag(theirs))
                    if not (err <= 1e-10 and derr <= 2e-8):
                        failures.append((kind, backend, YY is None, what, err, derr))
    assert not failures, failures


def test_residual_diagonal_is_exact():
    """K(x, x) and Θ(x, x) of a residual ReLU network against the per-point recursion in
    40-digit mpmath (ReLU on the diagonal: q ← q/2, Θ ← Θ/2; the sum adds both)."""
    import mpmath as mp

    net = dc.serial(dc.Dense(W, B), dc.repeat(_block(dc.activation("relu")), 2), "relu", dc.Dense(W, B))
    with mp.workdps(40):
        w2, b2 = mp.mpf(W) ** 2, mp.mpf(B) ** 2

        def dense(q, t):
            q = w2 * q + b2
            return q, w2 * t + q

        for backend in ("numpy", "numba"):
            k = net.kernel(X, backend=backend)
            for i, x in enumerate(X):
                q, t = dense(mp.fsum(mp.mpf(float(v)) ** 2 for v in x) / len(x), mp.mpf(0))
                for _ in range(2):
                    q0, t0 = q, t
                    q, t = dense(q / 2, t / 2)
                    q, t = dense(q / 2, t / 2)
                    q, t = q + q0, t + t0
                q, t = dense(q / 2, t / 2)
                assert abs(k.nngp[i, i] - float(q)) <= 4e-15 * float(q)
                assert abs(k.ntk[i, i] - float(t)) <= 4e-15 * float(t)


def test_hermite_activation_in_branches(stax):
    """tanh (Hermite method) in a residual block and in a product: the generated kernel, whose
    Hermite stages keep the other branch's registers in row buffers, against the reference, and
    the reference against ElementwiseNumerical at degree 400 (its degree-25 default is off by
    per cent when variances are far from 1)."""
    import jax.numpy as jnp

    tanh = dc.activation("tanh")
    net = dc.serial(dc.Dense(1.2, 0.1), _block(tanh, 1.1, 0.1), dc.FanOut(2),
                    dc.parallel(tanh, dc.serial("erf", dc.Dense(1.1, 0.1))), dc.FanInProd(), dc.Dense(1.2, 0.1))
    s = stax
    nt_tanh = s.ElementwiseNumerical(jnp.tanh, deg=400)
    nblock = s.serial(s.FanOut(2), s.parallel(s.serial(nt_tanh, s.Dense(8, 1.1, 0.1), nt_tanh, s.Dense(8, 1.1, 0.1)),
                                              s.Identity()), s.FanInSum())
    _, _, kfn = s.serial(s.Dense(8, 1.2, 0.1), nblock, s.FanOut(2),
                         s.parallel(nt_tanh, s.serial(s.Erf(), s.Dense(8, 1.1, 0.1))), s.FanInProd(), s.Dense(1, 1.2, 0.1))
    for YY in (None, Y):
        ref = net.kernel(X, YY, backend="numpy")
        gen = net.kernel(X, YY, backend="numba")
        assert _rel(gen.nngp, ref.nngp) < 1e-12 and _rel(gen.ntk, ref.ntk) < 1e-12
        theirs = kfn(X, YY, ("nngp", "ntk"))
        assert _rel(ref.nngp, theirs.nngp) < 1e-7
        assert _rel(ref.ntk, theirs.ntk) < 1e-7


# ----------------------------------------------------------------------------------------------
# generated kernels, Dask, the command line
def test_numba_zero_ntk_and_standard_parameterization_in_branches():
    """A delta σ' (sign: Θ ← 0 statically) inside one branch of a product and a standard-
    parameterization Dense after a FanInConcat (its width is the sum of the branches')."""
    net = dc.serial(dc.Dense(1.3, 0.2, "standard", out_dim=6), dc.FanOut(2),
                    dc.parallel(dc.serial("sign", dc.Dense(1.0, 0.1, "standard", out_dim=3)),
                                dc.serial("relu", dc.Dense(0.9, None, "standard", out_dim=5))),
                    dc.FanInConcat(), dc.Dense(1.1, 0.1, "standard", out_dim=1))
    prog = net.program()
    assert prog.ops[-1].width == 8
    for YY in (None, Y):
        ref = net.kernel(X, YY, backend="numpy")
        gen = net.kernel(X, YY, backend="numba")
        np.testing.assert_allclose(gen.nngp, ref.nngp, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(gen.ntk, ref.ntk, rtol=1e-13, atol=1e-15)


def test_cuda_source_of_branches_compiles():
    """The CUDA source of a network with every branch operation (and a Hermite activation)
    compiles to PTX through NVRTC, in both precisions (no GPU needed)."""
    if not cuda_target.nvrtc_available():
        pytest.skip("NVRTC is not installed (pip install 'dualcalc[cuda]')")
    net = dc.serial(dc.Dense(W, B, "standard", out_dim=4), _block(dc.activation("relu")), dc.LayerNorm(),
                    "tanh", dc.Dense(W, B, out_dim=4), dc.FanOut(3), dc.parallel("erf", "sign", dc.Identity()),
                    dc.FanInProd(), dc.FanOut(2), dc.parallel(dc.Dense(out_dim=2), dc.Dense(out_dim=6)),
                    dc.FanInConcat(), dc.Dense())
    src = net.source("cuda")
    for word in ("FanInSum", "FanInProd", "FanInConcat", "LayerNorm", "0.25 * c", "0.25f * c"):
        assert word in src
    ptx = cuda_target.compile_ptx(src, cuda_target.DEFAULT_ARCH)
    assert ".entry fc_kernel_f64" in ptx and ".entry fc_kernel_f32" in ptx


def test_cuda_source_of_branches_runs_on_cpu_emulation():
    """The same CUDA source, compiled for the CPU by the host C++ compiler and launched over its
    grid (codegen.cuda_target.run(emulate=True)): every branch operation, a Hermite activation,
    standard parameterization and a delta σ', against the NumPy reference; double ≤ 1e-12,
    float ≤ 1e-5 relative."""
    from codegen.cuda_env import cxx_compiler
    from dualcalc.reference import recursion_plan

    if cxx_compiler() is None:
        pytest.skip("no C++ compiler to emulate the CUDA source on the CPU")
    net = dc.serial(dc.Dense(1.3, 0.2, "standard", out_dim=4), _block(dc.activation("relu")), dc.LayerNorm(),
                    "tanh", dc.Dense(W, B, out_dim=4), dc.FanOut(3), dc.parallel("erf", "sign", dc.Identity()),
                    dc.FanInProd(), dc.FanOut(2), dc.parallel(dc.Dense(out_dim=2), dc.Dense(out_dim=6)),
                    dc.FanInConcat(), dc.Dense())
    Xe, Ye = _data(37, seed=3), _data(29, seed=4)
    for YY in (None, Ye):
        ref = net.kernel(Xe, YY, backend="numpy")
        plan = recursion_plan(net, Xe, YY)
        for precision, tol in (("double", 1e-12), ("float", 1e-5)):
            K, T = cuda_target.run(net.program(), plan, Xe, YY, ("nngp", "ntk"), np.float64, precision=precision,
                                   emulate=True)
            assert _rel(K, ref.nngp) < tol and _rel(T, ref.ntk) < tol, (YY is None, precision)


def test_dask_tiles_of_a_residual_network():
    da = pytest.importorskip("dask.array")
    net = dc.serial(dc.Dense(W, B), _block(dc.activation("erf")), dc.LayerNorm(), "relu", dc.Dense(W, B))
    Xb = _data(30, seed=5)
    ref = net.kernel(Xb, backend="numpy")
    k = net.kernel(da.from_array(Xb, chunks=(11, 4)), backend="numpy")
    np.testing.assert_allclose(np.asarray(k.nngp), ref.nngp, rtol=1e-13)
    np.testing.assert_allclose(np.asarray(k.ntk), ref.ntk, rtol=1e-13)


def test_net_spec_with_branches():
    spec = "dense(1.5,0.1)-repeat(fanout(2)-parallel(relu-dense(1.5,0.1)-relu-dense(1.5,0.1), identity)-faninsum, 2)" \
           "-layernorm(eps=0.01)-fanout(2)-parallel(erf, gelu)-faninprod-dense"
    net = parse_net_spec(spec)
    same = dc.serial(dc.Dense(W, B), _block(dc.activation("relu")), _block(dc.activation("relu")),
                     dc.LayerNorm(eps=0.01), dc.FanOut(2), dc.parallel("erf", "gelu"), dc.FanInProd(), dc.Dense())
    assert net.program().key == same.program().key
    for bad, match in (("dense-fanout(2)-relu", "2 branches"), ("dense-faninsum", "several branches"),
                       ("dense-fanout(2)-parallel(relu)-faninsum", "needs 1 branches"),
                       ("dense-fanout(x)", "whole number"), ("dense-repeat(relu)", "a SPEC and a count"),
                       ("dense-layernorm(axis=2)", "eps="), ("dense-identity(3)", "no arguments"),
                       ("dense-fanout(2)-parallel(relu, dense)", "branches")):
        with pytest.raises(ParameterError, match=match.replace("(", r"\(")):
            parse_net_spec(bad)


def test_show_net(capsys):
    from dualcalc.cli import main

    assert main(["show", "--net", "dense-fanout(2)-parallel(relu-dense, identity)-faninsum-layernorm-dense"]) == 0
    out = capsys.readouterr().out
    assert "r4 = FanInSum()(r3, r1)" in out and "LayerNorm" in out and "output: r6" in out
    assert main(["show", "--net", "dense-fanout(2)-parallel(relu, gelu)-faninprod-dense", "--target", "numba"]) == 0
    assert "FanInProd(): K = prod K_i" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------
# semantics and errors
def test_repeat_and_nesting_are_serial():
    blk = _block(dc.activation("relu"))
    a = dc.serial(dc.Dense(W, B), dc.repeat(blk, 3), dc.Dense())
    b = dc.serial(dc.Dense(W, B), dc.serial(blk, dc.serial(blk, blk)), dc.Dense())
    assert a.program().key == b.program().key
    assert dc.serial(dc.Dense(), dc.Identity(), "relu", dc.Identity()).program().key != \
        dc.serial(dc.Dense(), "relu").program().key  # descriptions differ ...
    np.testing.assert_array_equal(dc.serial(dc.Dense(), dc.Identity(), "relu").kernel(X, backend="numpy").ntk,
                                  dc.serial(dc.Dense(), "relu").kernel(X, backend="numpy").ntk)  # ... kernels do not


def test_fan_in_of_identical_branches_is_arithmetic():
    """FanInSum of n copies is n·K; FanInProd of two copies is K² (Θ: 2KΘ); LayerNorm makes the
    NNGP diagonal q/(q + eps)."""
    base = dc.serial(dc.Dense(W, B), "erf", dc.Dense(W, B))
    k = base.kernel(X, Y, backend="numpy")
    s = dc.serial(base, dc.FanOut(3), dc.FanInSum()).kernel(X, Y, backend="numpy")
    np.testing.assert_allclose(s.nngp, 3 * k.nngp, rtol=1e-14)
    np.testing.assert_allclose(s.ntk, 3 * k.ntk, rtol=1e-14)
    p = dc.serial(base, dc.FanOut(2), dc.FanInProd()).kernel(X, Y, backend="numpy")
    np.testing.assert_allclose(p.nngp, k.nngp ** 2, rtol=1e-14)
    np.testing.assert_allclose(p.ntk, 2 * k.nngp * k.ntk, rtol=1e-14)
    ln = dc.serial(base, dc.LayerNorm(eps=0.5)).kernel(X, backend="numpy")
    q = np.diag(base.kernel(X, backend="numpy").nngp)
    np.testing.assert_allclose(np.diag(ln.nngp), q / (q + 0.5), rtol=1e-14)


@pytest.mark.parametrize("make, match", [
    (lambda: dc.serial(dc.Dense(), dc.FanOut(2)), "2 branches"),
    (lambda: dc.serial(dc.Dense(), dc.FanInSum()), "several branches"),
    (lambda: dc.serial(dc.Dense(), dc.FanOut(2), dc.parallel("relu", "relu", "relu"), dc.FanInSum()), "needs 3"),
    (lambda: dc.serial(dc.FanOut(2), dc.parallel(dc.serial("relu", dc.Dense()), dc.Identity()), dc.FanInSum()),
     "raw input"),
    (lambda: dc.serial(dc.Dense(), "relu", dc.LayerNorm()), "Gaussian"),
    (lambda: dc.serial(dc.Dense(), dc.FanOut(2), dc.parallel(dc.Dense(out_dim=3), dc.Dense()), dc.FanInConcat()),
     "out_dim"),
    (lambda: dc.serial(dc.Dense(), dc.FanOut(2), dc.FanInSum(), dc.Dense(1.0, 0.0, "standard")), "out_dim"),
])
def test_malformed_networks_are_refused_when_lowered(make, match):
    with pytest.raises(ParameterError, match=match):
        make().program()


def test_layer_parameters_validated():
    for make in (lambda: dc.FanOut(0), lambda: dc.FanOut(2.0), lambda: dc.LayerNorm(axis=0),
                 lambda: dc.LayerNorm(eps=-1.0), lambda: dc.LayerNorm(eps=float("nan")), lambda: dc.repeat(dc.Dense(), 0),
                 lambda: dc.parallel(), lambda: dc.parallel(42), lambda: dc.FanInConcat(axis=0)):
        with pytest.raises(ParameterError):
            make()


def test_layernorm_of_a_zero_variance_point():
    Z = X.copy()
    Z[2] = 0.0
    net = dc.serial(dc.Dense(1.0, 0.0), dc.LayerNorm(eps=0.0), "relu", dc.Dense())
    with pytest.raises(InputError, match="zero variance"):
        net.kernel(Z, backend="numpy")
    k = dc.serial(dc.Dense(1.0, 0.0), dc.LayerNorm(), "relu", dc.Dense()).kernel(Z, backend="numpy")
    assert np.all(np.isfinite(k.nngp)) and np.all(np.isfinite(k.ntk))


def test_branches_are_not_exported_to_stax_yet():
    with pytest.raises(ParameterError, match="serial"):
        dc.serial(dc.Dense(), _block(dc.activation("relu")), dc.Dense()).source("jax")


def test_dependent_branches_warn():
    """A fan-in of branches that share pre-activations without a Dense of their own (relu(z)·z) is
    not what the kernel formula describes (tests/test_branches_mc.py: 200% off); it warns, as
    neural-tangents does. A residual block (Identity beside a branch with Dense layers) does not."""
    import warnings

    with pytest.warns(UserWarning, match="branches 0 and 1 read the same pre-activations"):
        dc.serial(dc.Dense(), dc.FanOut(2), dc.parallel("relu", dc.Identity()), dc.FanInProd(), dc.Dense()).program()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dc.serial(dc.Dense(), _block(dc.activation("relu")), _block(dc.activation("erf")), dc.Dense()).program()
        dc.serial(dc.Dense(), dc.FanOut(2), dc.parallel("relu", dc.serial("erf", dc.Dense(), "relu")), dc.FanInProd(),
                  dc.Dense()).program()
