"""KernelSketch of networks with branches and LayerNorm (issue 13, item 3): residual (FanOut,
parallel, Identity, FanInSum), FanInProd, FanInConcat and LayerNorm networks.

Oracles: the exact kernel ``net.kernel(X, backend="numpy")`` (itself checked against
neural-tangents in tests/test_branches.py), the error of ideal i.i.d. Gaussian random features
of that kernel (the floor), a serial network of the same depth at the same m, and — for
networks without activations, where every random map is unbiased given exact inputs — the
mean over seeds.  The branch operations run the SRHT/TensorSRHT/CountSketch of sketch/srht.py
and the existing per-activation weighting: no new generated (Numba/CUDA) source.
"""
from __future__ import annotations

import numpy as np
import pytest

import dualcalc as dc
from dualcalc.layers import FanInConcat
from dualcalc.network import FanInProd, FanInSum, FanOut, Identity, LayerNorm, parallel
from dualcalc.program import Program, Sum


def _rel(Z, K):
    return float(np.linalg.norm(Z @ Z.T - K) / np.linalg.norm(K))


def _floor(K, m):
    """Expected error of m ideal i.i.d. Gaussian random features of K."""
    return float(np.sqrt((np.trace(K) ** 2 + np.linalg.norm(K) ** 2) / m) / np.linalg.norm(K))


def _data(n=150, d=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, (n, 1))  # varied norms


def _nets(name):
    """(branched net, serial net with as many activation and Dense layers) for one case."""
    act = dc.activation("erf" if name.endswith("erf") else "relu")
    W, b = (1.0, 0.1) if name.endswith("erf") else (1.5, 0.1)

    def D(w=W, c=b):
        return dc.Dense(w, c)

    serial4 = dc.serial(D(), *[act, D()] * 4)
    if name.startswith("residual"):
        blk = dc.serial(FanOut(2), parallel(dc.serial(act, D(), act, D()), Identity()), FanInSum())
        if name.endswith("erf"):  # one block: erf's coefficient tables cost ~0.8 s per layer and fit
            return dc.serial(D(), blk, D()), dc.serial(D(), *[act, D()] * 2)
        return dc.serial(D(), blk, blk, D()), serial4
    if name == "layernorm":
        return dc.serial(D(), act, D(), LayerNorm(), act, D(), LayerNorm(eps=1e-3), act, D(), act, D()), serial4
    assert name == "prod"
    return (dc.serial(D(), act, D(), FanOut(2), parallel(dc.serial(act, D()), dc.serial(act, dc.Dense(1.0, 0.3))),
                      FanInProd(), act, D()), serial4)


_EXACT: dict = {}


def _errors(net, kernel, X, degree, key):
    if key not in _EXACT:
        _EXACT[key] = net.kernel(X, backend="numpy")
    K = getattr(_EXACT[key], kernel)
    out = []
    for m in (512, 2048):
        Z = dc.KernelSketch(net, m, kernel=kernel, random_state=0, degree=degree).fit_transform(X)
        assert Z.shape == (X.shape[0], m) and np.all(np.isfinite(Z))
        out.append((_rel(Z, K), _floor(K, m)))
    return out


@pytest.mark.parametrize("name", ["residual-relu", "residual-erf", "layernorm", "prod"])
@pytest.mark.parametrize("kernel", ["nngp", "ntk"])
def test_branch_sketch_error_falls_like_serial(name, kernel):
    """n = 150, m = 512 and 2048: measured 0.5–1.3× the floor (serial nets 0.5–1.1×), error
    ratio 0.33–0.63 for 4× the features (1/√m: 0.5)."""
    X = _data()
    net, serial = _nets(name)
    degree = 6
    (e1, f1), (e2, f2) = _errors(net, kernel, X, degree, name)
    (s1, g1), (s2, g2) = _errors(serial, kernel, X, degree, "serial-" + name)
    assert e2 < 0.7 * e1, (e1, e2)  # ~1/√m, not a bias that stays
    for e, f, s, g in ((e1, f1, s1, g1), (e2, f2, s2, g2)):
        assert e < 1.6 * f, (e, f)
        assert e / f < 2.0 * max(s / g, 0.5), (e / f, s / g)  # comparable to the serial net


def test_branch_ops_unbiased_without_activations():
    """Dense, FanInProd, LayerNorm, FanInSum (re-sketched: internal_dim 8, concatenations past 16
    go through an SRHT) and a standard-parameterization Dense with a b_std = 0 trainable bias:
    every map is unbiased given exact inputs, so the mean of 64 sketches (m = 16, normalize=False)
    converges to the exact kernel like 1/√64."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((20, 12))
    net = dc.serial(dc.Dense(1.2, 0.3), FanOut(2), parallel(dc.Dense(1.1, 0.4), dc.serial(dc.Dense(0.9, 0.2), LayerNorm())),
                    FanInProd(), FanOut(2), parallel(Identity(), dc.Dense(1.3, 0.5)), FanInSum(), dc.Dense(1.0, 0.2))
    std = dc.serial(dc.Dense(1.0, 0.0, parameterization="standard", out_dim=4),
                    dc.Dense(1.0, 0.0, parameterization="standard", out_dim=4))
    for nt in (net, std):
        k = nt.kernel(X, backend="numpy")
        for kernel in ("nngp", "ntk"):
            K = getattr(k, kernel)
            Zs = [dc.KernelSketch(nt, 16, kernel=kernel, random_state=s, internal_dim=8, normalize=False,
                                  precision="double").fit_transform(X) for s in range(64)]
            single = np.mean([_rel(Z, K) for Z in Zs])
            mean = np.linalg.norm(np.mean([Z @ Z.T for Z in Zs], axis=0) - K) / np.linalg.norm(K)
            assert single > 0.05  # the sketch is random (the test is not vacuous)
            assert mean < 2.0 * single / np.sqrt(64), (kernel, mean, single)


def test_trivial_branches_give_the_serial_features():
    """A one-branch FanOut/FanInSum and Identity layers add no random map: the same features,
    bit for bit, as the serial network for the same random_state."""
    X = _data(60)
    act = dc.activation("gelu")
    serial = dc.serial(dc.Dense(1.2, 0.2), act, dc.Dense(1.0, 0.3), act, dc.Dense(1.0, 0.3))
    branched = dc.serial(dc.Dense(1.2, 0.2), Identity(), FanOut(1), parallel(dc.serial(act, dc.Dense(1.0, 0.3))),
                         FanInSum(), act, dc.Dense(1.0, 0.3))
    for kernel in ("nngp", "ntk"):
        a = dc.KernelSketch(serial, 300, kernel=kernel, random_state=4, degree=3).fit_transform(X)
        b = dc.KernelSketch(branched, 300, kernel=kernel, random_state=4, degree=3).fit_transform(X)
        assert np.array_equal(a, b)


def test_concat_and_deep_residual_width_bounded():
    """FanInConcat sketches as the width-weighted concatenation; eight residual blocks keep every
    feature at most 2·internal_dim wide (the SRHT re-sketch) with the error near the floor."""
    X = _data(120)
    act = dc.activation("relu")
    cat = dc.serial(dc.Dense(1.2, 0.2), FanOut(2),
                    parallel(dc.serial(act, dc.Dense(1.2, 0.2, out_dim=30)), dc.Dense(1.0, 0.3, out_dim=10)),
                    FanInConcat(), act, dc.Dense(1.0, 0.2))
    blk = dc.serial(FanOut(2), parallel(dc.serial(act, dc.Dense(1.0, 0.1)), Identity()), FanInSum())
    deep = dc.serial(dc.Dense(1.0, 0.1), dc.repeat(blk, 8), dc.Dense(1.0, 0.1))
    for net in (cat, deep):
        k = net.kernel(X, backend="numpy")
        for kernel in ("nngp", "ntk"):
            sk = dc.KernelSketch(net, 1024, kernel=kernel, random_state=1, degree=6)
            Z = sk.fit_transform(X)
            K = getattr(k, kernel)
            assert _rel(Z, K) < 1.6 * _floor(K, 1024)
            dims = [st[key].out_dim for st in sk.plan_[1:-1] if st["kind"] == "sum"
                    for key in ("psi", "phi") if st[key] is not None]
            assert all(dm == 1024 for dm in dims)  # 2 · internal_dim (512)
            if net is deep:
                assert dims  # the re-sketch did happen


def test_errors():
    X = _data(40)
    act = dc.activation("relu")
    blk = dc.serial(FanOut(2), parallel(dc.serial(act, dc.Dense(1.0, 0.0)), Identity()), FanInSum())
    res = dc.serial(dc.Dense(1.0, 0.0), blk, dc.Dense(1.0, 0.0))  # homogeneous, no biases
    sk = dc.KernelSketch(res, 256, random_state=0, degree=4).fit(X)
    assert sk.method_ == "layerwise"  # "auto" does not pick the homogeneous embedding
    with pytest.raises(dc.ParameterError, match="branches or LayerNorm"):
        dc.KernelSketch(res, 256, method="homogeneous").fit(X)
    with pytest.raises(dc.ParameterError, match="one per activation layer"):
        dc.KernelSketch(res, 256, degree=[4, 4]).fit(X)
    with pytest.raises(dc.ParameterError):  # branches left open
        dc.KernelSketch(dc.serial(dc.Dense(), FanOut(2), parallel(act, act)), 256).fit(X)
    # LayerNorm(eps=0) of a zero row: refused like the exact kernel, at fit and at transform
    ln = dc.serial(dc.Dense(1.0, 0.0), LayerNorm(eps=0.0), act, dc.Dense())
    X0 = X.copy()
    X0[3] = 0.0
    with pytest.raises(dc.InputError):
        ln.kernel(X0, backend="numpy")
    with pytest.raises(dc.InputError, match="zero variance"):
        dc.KernelSketch(ln, 256).fit(X0)  # the degree choice runs the diagonal
    fitted = dc.KernelSketch(ln, 256, degree=4).fit(X)
    with pytest.raises(dc.InputError, match="zero variance"):
        fitted.transform(X0)
    # a weighted sum with a negative weight is no kernel of random features
    net = dc.serial(dc.Dense(), FanOut(2), parallel(dc.Dense(), Identity()), FanInSum())
    prog = net.program()
    bad = Program(prog.ops[:-1] + (Sum(prog.ops[-1].srcs, "FanInSum()", (1.0, -0.5)),), prog.output,
                  prog.description)
    net.__dict__["_program"] = (net.layers, bad)  # the program cache Network.program() serves
    with pytest.raises(dc.ParameterError, match="negative weight"):
        dc.KernelSketch(net, 256).fit(X)


@pytest.mark.gpu
def test_cuda_branches_agree_in_distribution():  # pragma: no cover - needs a GPU
    cupy = pytest.importorskip("cupy")
    try:
        n_gpu = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CuPy installed, no driver/device
        pytest.skip(f"no usable GPU ({type(e).__name__})")
    if n_gpu == 0:
        pytest.skip("no GPU")
    X = _data()
    for name in ("residual-relu", "layernorm", "prod"):
        net, _ = _nets(name)
        K = net.kernel(X, backend="numpy").ntk
        ec = [_rel(dc.KernelSketch(net, 2048, random_state=s, degree=4, backend="cuda").fit_transform(X), K)
              for s in range(4)]
        en = [_rel(dc.KernelSketch(net, 2048, random_state=s, degree=4, backend="numba").fit_transform(X), K)
              for s in range(4)]
        assert abs(np.mean(ec) - np.mean(en)) < 0.5 * np.mean(en), name
