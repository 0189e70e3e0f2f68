"""Convolutional networks with strides, padded/strided/sum pooling, LayerNorm and branches (issue 14):
the image lowering and the NumPy reference against neural-tangents' ``kernel_fn`` (float64).

neural-tangents computes the diagonal K(x, x) through the same pair formulas, so after a FanInSum
its arccos sees a correlation rounded off 1 and its diagonal is off by up to ~1e-9 relative;
dualcalc's diagonal comes from each image's own recursion (exactly ρ = 1). The agreement bound
1e-9 is therefore checked off the diagonal of K(X, X) and on all of K(X, Y); the diagonal itself
against a looser 1e-7 and, independently, against the images' own recursion.

8×8×3 images keep neural-tangents' kernels small; its WideResNet at 32×32×3 (minutes) runs only
with DUALCALC_RUN_SLOW=1.
"""
from __future__ import annotations

import os
import time
import warnings

import numpy as np
import pytest

import dualcalc as dc
from dualcalc.conv import AvgPool, Conv, Flatten, GlobalAvgPool, GlobalSumPool, SumPool, image_program
from dualcalc.conv_kernel import conv_kernel, conv_source
from dualcalc.errors import BackendError, ParameterError

RNG = np.random.default_rng(14)
X = RNG.normal(size=(3, 8, 8, 3))
Y = RNG.normal(size=(2, 8, 8, 3))
TOL = 1e-9


def _nt(stax, layer):
    """The neural-tangents layer of a dualcalc layer (branches recursively)."""
    if isinstance(layer, Conv):
        return stax.Conv(1, layer.filter_shape, strides=layer.strides, padding=layer.padding,
                         W_std=layer.W_std, b_std=layer.b_std)
    if isinstance(layer, SumPool):
        return stax.SumPool(layer.window, strides=layer.strides, padding=layer.padding)
    if isinstance(layer, AvgPool):  # normalize_edges=False: neural-tangents' default
        return stax.AvgPool(layer.window, strides=layer.strides, padding=layer.padding)
    simple = {Flatten: stax.Flatten, GlobalAvgPool: stax.GlobalAvgPool, GlobalSumPool: stax.GlobalSumPool,
              dc.Identity: stax.Identity, dc.FanInSum: stax.FanInSum, dc.FanInProd: stax.FanInProd}
    if type(layer) in simple:
        return simple[type(layer)]()
    if isinstance(layer, dc.Dense):
        return stax.Dense(1, W_std=layer.W_std, b_std=layer.b_std)
    if isinstance(layer, dc.LayerNorm):
        return stax.LayerNorm(axis=layer.axis, eps=layer.eps)
    if isinstance(layer, dc.FanOut):
        return stax.FanOut(layer.num)
    if type(layer).__name__ == "Parallel":
        return stax.parallel(*[stax.serial(*[_nt(stax, l) for l in br]) for br in layer.branches])
    p = layer.params
    return {"relu": lambda: stax.Relu(), "gelu": lambda: stax.Gelu(approximate=False),
            "erf": lambda: stax.Erf(a=p["a"], b=p["b"], c=p["d"])}[layer.name]()


def nt_kernels(nt, net, A, B=None):
    _, _, kernel_fn = nt.stax.serial(*[_nt(nt.stax, l) for l in net.layers])
    k = kernel_fn(A, B, ("nngp", "ntk"))
    return np.asarray(k.nngp), np.asarray(k.ntk)


def rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b)))


def off_diagonal(M):
    return M[~np.eye(M.shape[0], dtype=bool)]


def _block(act, W=1.3, b=0.1, strides=(1, 1), shortcut=None):
    main = dc.serial(act, Conv(W, b, (3, 3), "SAME", strides), act, Conv(W, b, (3, 3), "SAME"))
    return dc.serial(dc.FanOut(2), dc.parallel(main, shortcut or dc.Identity()), dc.FanInSum())


def nets(act):
    a = dc.activation(act)
    return {
        # 8 → 3 (VALID 3×3, stride 2) → 2 (SAME 2×2, stride 2: padding 1, all after); an uneven stride
        "strided-conv": dc.serial(Conv(1.5, 0.1, (3, 3), "VALID", (2, 2)), a, Conv(1.2, 0.2, (2, 2), "SAME", (2, 2)),
                                  a, Conv(1.1, 0.3, (2, 1), "SAME", (1, 2)), a, Flatten(), dc.Dense(1.3, 0.1)),
        # SAME 3×3 stride 2 average pool (zero padding counts), stride-1 sum pool, global sum pool
        "pooling": dc.serial(Conv(1.4, 0.2, (3, 3), "SAME", (1, 1)), a, AvgPool((3, 3), (2, 2), "SAME"),
                             Conv(1.2, 0.1, (2, 2), "SAME"), a, SumPool((2, 2), (1, 1)), AvgPool((2, 2), (1, 1)),
                             GlobalSumPool(), dc.Dense(1.2, 0.1)),
        "layernorm": dc.serial(Conv(1.5, 0.3), dc.LayerNorm(eps=0.1), a, Conv(1.3, 0.2, (3, 3), "SAME", (2, 2)),
                               dc.LayerNorm(axis=(1, 2, 3), eps=0.05), a, Conv(1.2, 0.1), dc.LayerNorm(), a,
                               GlobalAvgPool(), dc.Dense(1.1, 0.1)),
        "residual": dc.serial(Conv(1.4, 0.1), _block(a), _block(a, strides=(2, 2),
                                                                shortcut=Conv(1.2, 0.2, (3, 3), "SAME", (2, 2))),
                              a, SumPool((2, 2)), Flatten(), dc.Dense(1.2, 0.1)),
        "prod": dc.serial(Conv(1.3, 0.2), dc.FanOut(2), dc.parallel(dc.serial(a, Conv(1.2, 0.1)), Conv(0.9, 0.3)),
                          dc.FanInProd(), Conv(1.1, 0.1, (3, 3), "VALID"), a, Flatten(), dc.Dense(1.0, 0.1)),
        "wide_resnet": dc.wide_resnet(1, 1, activation=a, pool_window=(2, 2)),
    }


CASES = [("strided-conv", "relu"), ("strided-conv", "gelu"), ("pooling", "erf"), ("layernorm", "relu"),
         ("layernorm", "gelu"), ("residual", "relu"), ("residual", "erf"), ("prod", "gelu"), ("prod", "relu"),
         ("wide_resnet", "relu")]


@pytest.mark.parametrize("name,act", CASES)
def test_agrees_with_neural_tangents(neural_tangents, name, act):
    """NNGP and NTK, K(X, Y) everywhere and K(X, X) off its diagonal, ≤ 1e-9 relative to the largest
    entry (observed ≤ 1e-15); the diagonal against neural-tangents' at 1e-7 (its own is off by up to
    1.5e-9 here).  One neural-tangents call on X ∪ Y gives both blocks (its cost dominates)."""
    net = nets(act)[name]
    assert not image_program(net, X.shape[1:]).serial
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kxy = conv_kernel(net, X, Y, backend="numpy")
        kxx = conv_kernel(net, X, backend="numpy")
    n = X.shape[0]
    nzz, tzz = nt_kernels(neural_tangents, net, np.concatenate([X, Y]))
    assert rel(kxy.nngp, nzz[:n, n:]) < TOL and rel(kxy.ntk, tzz[:n, n:]) < TOL
    for ours, theirs in ((kxx.nngp, nzz[:n, :n]), (kxx.ntk, tzz[:n, :n])):
        assert rel(off_diagonal(ours), off_diagonal(theirs)) < TOL
        assert rel(np.diag(ours), np.diag(theirs)) < 1e-7
        assert rel(ours, ours.T) < 1e-14


def test_padding_and_sizes():
    """TensorFlow SAME with strides: output ⌈n/s⌉, padding max((out−1)·s + f − n, 0), the smaller
    half before; VALID ⌊(n − f)/s⌋ + 1; pools alike; strides=None is the window."""
    net = dc.serial(Conv(1, 0, (4, 3), "SAME", (3, 2)), AvgPool((3, 2), None, "SAME"), SumPool((2, 2), (1, 1)),
                    Flatten())
    ops = image_program(net, (11, 7, 1)).ops
    c = ops[0]  # 11 → ⌈11/3⌉ = 4 (padding 3·3 + 4 − 11 = 2: 1 before); 7 → 4 (padding 3·2 + 3 − 7 = 2: 1)
    assert (c.hout, c.wout, c.ph, c.pw, c.sh, c.sw) == (4, 4, 1, 1, 3, 2)
    p = ops[1]  # window (3, 2) stride (3, 2): 4 → 2 (padding 2: 1 before), 4 → 2 (padding 0)
    assert (p.hout, p.wout, p.ph, p.pw, p.sh, p.sw, p.scale) == (2, 2, 1, 0, 3, 2, 1 / 6)
    s = ops[2]
    assert (s.hout, s.wout, s.scale) == (1, 1, 1.0)
    with pytest.raises(ParameterError, match="leaves nothing"):
        image_program(net, (5, 5, 1))


def test_lowering_registers_and_serial_flag():
    """A residual block is FanOut-free registers: the sum reads the block's input and the main
    branch; serial programs are unchanged (srcs = previous op, stride 1, window pools)."""
    a = dc.activation("relu")
    prog = image_program(dc.serial(Conv(), _block(a), Flatten(), dc.Dense()), (8, 8, 3))
    kinds = [op.kind for op in prog.ops]
    assert kinds == ["conv", "act", "conv", "act", "conv", "sum", "flatten", "dense"]
    assert prog.ops[5].srcs == (4, 0) and prog.ops[1].srcs == (0,) and prog.ops[0].srcs == (-1,)
    assert not prog.serial and "branch" in prog.unsupported[0]
    myrtle = image_program(dc.myrtle(5), (32, 32, 3))
    assert myrtle.serial and all(op.srcs == (i - 1,) for i, op in enumerate(myrtle.ops))
    for net in (dc.serial(Conv(strides=2), Flatten()), dc.serial(Conv(), SumPool(2), Flatten()),
                dc.serial(Conv(), AvgPool(2, 1), Flatten()), dc.serial(Conv(), GlobalSumPool()),
                dc.serial(Conv(), dc.LayerNorm(), Flatten())):
        assert not image_program(net, (8, 8, 3)).serial


def test_backends_refuse_what_they_do_not_generate():
    net = dc.serial(Conv(1.2, 0.1, (3, 3), "SAME", (2, 2)), "relu", Flatten(), dc.Dense())
    for backend in ("numba", "cuda"):
        with pytest.raises(BackendError, match="backend='numpy'"):
            conv_kernel(net, X, backend=backend)
        with pytest.raises(BackendError, match="strides"):
            conv_source(net, backend, input_shape=(8, 8, 3))
    with pytest.warns(UserWarning, match="NumPy reference"):
        k = conv_kernel(net, X, Y)  # auto: the reference, with a note
    assert np.array_equal(k.nngp, conv_kernel(net, X, Y, backend="numpy").nngp)
    from dualcalc.sketch.conv_sketch import ConvKernelSketch

    with pytest.raises(ParameterError, match="serial"):
        ConvKernelSketch(net, n_components=16).fit(X)


def test_layer_and_network_errors():
    a = dc.activation("relu")
    for make, match in ((lambda: SumPool((2, 2), (0, 1)), "strides"), (lambda: Conv(strides=(1, 2, 3)), "strides"),
                        (lambda: AvgPool(2, padding="FULL"), "padding"), (lambda: dc.LayerNorm(axis=(1, 2)), "axis"),
                        (lambda: dc.LayerNorm(axis=0), "axis"), (lambda: dc.wide_resnet(0, 1), "block_size"),
                        (lambda: dc.wide_resnet(1, 0), "k")):
        with pytest.raises(ParameterError, match=match):
            make()
    bad = {
        "different image sizes": dc.serial(Conv(), _block(a, strides=(2, 2)), Flatten()),  # Identity shortcut
        "Gaussian": dc.serial(Conv(), a, dc.LayerNorm(), Flatten()),
        "axis 1 is the height": dc.serial(Conv(), dc.LayerNorm(axis=1), Flatten()),
        "image axes are gone": dc.serial(Conv(), Flatten(), dc.LayerNorm(axis=(1, 2, 3))),
        "needs a Conv or Dense": dc.serial(dc.FanOut(2), dc.parallel(a, Conv()), dc.FanInSum(), Flatten()),
        "not supported yet": dc.serial(Conv(), dc.FanOut(2), dc.parallel(Conv(), Conv()), dc.FanInConcat(), Flatten()),
        "branches": dc.serial(Conv(), dc.FanOut(2), Flatten()),
        "end in a number": dc.serial(Conv(), dc.FanOut(2), dc.parallel(Conv(), Conv()), dc.FanInSum()),
    }
    for match, net in bad.items():
        with pytest.raises(ParameterError, match=match):
            image_program(net, (8, 8, 3))
    with pytest.raises(ParameterError, match="fully connected"):  # the tuple axis is for images
        dc.serial(dc.Dense(), dc.LayerNorm(axis=(1, 2, 3)), "relu", dc.Dense()).program()
    with pytest.warns(UserWarning, match="dependent"):
        image_program(dc.serial(Conv(), dc.FanOut(2), dc.parallel("relu", "erf"), dc.FanInProd(), Flatten()),
                      (8, 8, 3))


def test_wide_resnet_layout():
    """neural-tangents' README WideResnet: conv, 3 groups (first block: conv shortcut, strides 1, 2, 2),
    AvgPool((8, 8)) stride 1, Flatten, Dense; 32 → 32 → 16 → 8 → 1."""
    prog = image_program(dc.wide_resnet(2, 1), (32, 32, 3))
    kinds = [op.kind for op in prog.ops]
    assert kinds.count("sum") == 6 and kinds.count("act") == 12 and kinds.count("conv") == 1 + 12 + 3
    strided = [op for op in prog.ops if op.kind == "conv" and op.sh == 2]
    assert [(op.hin, op.hout) for op in strided] == [(32, 16), (32, 16), (16, 8), (16, 8)]
    pool = [op for op in prog.ops if op.kind == "pool"][0]
    assert (pool.hin, pool.fh, pool.sh, pool.hout) == (8, 8, 1, 1) and kinds[-2:] == ["flatten", "dense"]


@pytest.mark.skipif(not os.environ.get("DUALCALC_RUN_SLOW"), reason="slow (minutes): set DUALCALC_RUN_SLOW=1")
def test_wide_resnet_32_against_neural_tangents(neural_tangents):
    """The README WideResNet (block_size 1, k 1) at 32×32×3, two images against one and with themselves."""
    A, B = RNG.normal(size=(2, 32, 32, 3)), RNG.normal(size=(1, 32, 32, 3))
    net = dc.wide_resnet(1, 1)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kxy, kxx = conv_kernel(net, A, B, backend="numpy"), conv_kernel(net, A, backend="numpy")
    t1 = time.perf_counter()
    nxy, txy = nt_kernels(neural_tangents, net, A, B)
    nxx, txx = nt_kernels(neural_tangents, net, A)
    t2 = time.perf_counter()
    print(f"\nWideResNet(1, 1) 32x32x3: dualcalc numpy {t1 - t0:.2f} s, neural-tangents {t2 - t1:.2f} s; "
          f"K(X,Y) nngp {rel(kxy.nngp, nxy):.1e} ntk {rel(kxy.ntk, txy):.1e}; K(X,X) off-diagonal nngp "
          f"{rel(off_diagonal(kxx.nngp), off_diagonal(nxx)):.1e} "
          f"ntk {rel(off_diagonal(kxx.ntk), off_diagonal(txx)):.1e}")
    assert rel(kxy.nngp, nxy) < TOL and rel(kxy.ntk, txy) < TOL
    assert rel(off_diagonal(kxx.nngp), off_diagonal(nxx)) < TOL and rel(off_diagonal(kxx.ntk), off_diagonal(txx)) < TOL


def test_dask_tiles_and_exports():
    """A residual conv net through Dask tiles (the reference inside each tile) equals the in-memory
    kernel; the new names are public."""
    da = pytest.importorskip("dask.array")
    net = nets("relu")["residual"]
    Z = np.concatenate([X, Y])
    ref = net.kernel(Z, backend="numpy")
    k = net.kernel(da.from_array(Z, chunks=(2, 8, 8, 3)), backend="numpy")
    nngp, ntk = (a.compute(scheduler="threads") for a in (k.nngp, k.ntk))
    assert rel(nngp, ref.nngp) < 1e-14 and rel(ntk, ref.ntk) < 1e-14
    assert dc.SumPool is SumPool and dc.GlobalSumPool is GlobalSumPool and callable(dc.wide_resnet)


def test_self_pass_tables_of_layernorms():
    """image_tables (the self pass the generated passes read) gives a LayerNorm's divisor v = q + ε per
    pixel (n, P), q̄ + ε per image (n,), in chunks equal to the whole-batch recursion."""
    from dualcalc.conv_reference import image_tables, self_recursion

    net = dc.serial(Conv(1.5, 0.3), dc.LayerNorm(eps=0.1), "relu", Conv(1.2, 0.1, (3, 3), "SAME", (2, 2)),
                    dc.LayerNorm(axis=(1, 2, 3), eps=0.05), "erf", Flatten(), dc.Dense(1.2, 0.1), dc.LayerNorm(),
                    dc.Dense())
    Z = np.concatenate([X, Y])
    prog = image_program(net, Z.shape[1:])
    Kd, Td, tables = image_tables(prog, Z, chunk=2)
    K, T, q = self_recursion(prog, Z)
    assert np.array_equal(Kd, K) and np.array_equal(Td, T)
    n = Z.shape[0]
    assert np.allclose(tables[1][0], q[1].reshape(n, -1) + 0.1, rtol=1e-15)
    assert np.allclose(tables[4][0], q[4].reshape(n, -1).mean(axis=1) + 0.05, rtol=1e-15)
    assert np.allclose(tables[8][2], 1 / np.sqrt(q[8] + 1e-12), rtol=1e-15) and tables[8][3] is None


# -------------------------------------------------------------------------------------------
# finite-width Monte Carlo (NumPy only, no neural-tangents): the NNGP of a residual conv net
def _conv_layer(h, W_std, b_std, stride, rng, width, f=3):
    """A random SAME f×f convolution (TensorFlow padding with strides), NTK parameterization."""
    n, H = h.shape[:2]
    out = -(-H // stride)
    tot = max((out - 1) * stride + f - H, 0)
    hp = np.pad(h, ((0, 0), (tot // 2, tot - tot // 2), (tot // 2, tot - tot // 2), (0, 0)))
    end = (out - 1) * stride + 1
    P = np.stack([hp[:, a:a + end:stride, b:b + end:stride] for a in range(f) for b in range(f)], axis=3)
    P = P.reshape(n, out, out, -1)
    return W_std / np.sqrt(P.shape[-1]) * P @ rng.normal(size=(P.shape[-1], width)) + b_std * rng.normal(size=width)


def test_residual_nngp_against_finite_networks():
    """E over random finite networks (width 128, 80 draws; readout averaged analytically:
    1.2²⟨z_x, z_y⟩/n + 0.1²) of a strided residual block with a strided-Conv shortcut, within
    4.5 SE + 1% (finite-width bias) per entry; the same bound rejects a kernel 10% off."""
    relu = lambda z: np.maximum(z, 0.0)  # noqa: E731
    A = np.random.default_rng(3).normal(size=(4, 6, 6, 3))
    net = dc.serial(Conv(1.4, 0.1), dc.FanOut(2),
                    dc.parallel(dc.serial("relu", Conv(1.3, 0.1, (3, 3), "SAME", (2, 2)), "relu", Conv(1.3, 0.1)),
                                Conv(1.2, 0.2, (3, 3), "SAME", (2, 2))),
                    dc.FanInSum(), "relu", GlobalAvgPool(), dc.Dense(1.2, 0.1))
    K = net.kernel(A, backend="numpy", get="nngp").nngp
    rng, width = np.random.default_rng(0), 128
    draws = []
    for _ in range(80):
        h0 = _conv_layer(A, 1.4, 0.1, 1, rng, width)
        main = _conv_layer(relu(_conv_layer(relu(h0), 1.3, 0.1, 2, rng, width)), 1.3, 0.1, 1, rng, width)
        z = relu(main + _conv_layer(h0, 1.2, 0.2, 2, rng, width)).mean(axis=(1, 2))
        draws.append(1.44 * z @ z.T / width + 0.01)
    draws = np.array(draws)
    mean, se = draws.mean(axis=0), draws.std(axis=0, ddof=1) / np.sqrt(len(draws))
    bound = 4.5 * se + 0.01 * np.abs(K)
    assert np.all(np.abs(mean - K) <= bound)
    assert np.any(np.abs(mean - 1.1 * K) > bound)
