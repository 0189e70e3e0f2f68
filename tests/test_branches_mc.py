"""Branch layers and LayerNorm against finite random networks (Monte Carlo), independent of
neural-tangents and of dualcalc's own lowering.

The oracle is a small finite-width network written here: weights drawn with NumPy, the forward
pass in JAX, whose autodiff gives the back-propagated errors (no neural-tangents code, no
dualcalc lowering). For each random network (NTK parameterization:
``z = W/√n_in · h + b·β``, W, β ~ N(0, 1); output ``f = w/√n · V·h + b·β_o`` of width 1):

* NNGP: ``E_V,β_o[f(x) f(y)] = w² h(x)·h(y)/n + b²`` given the last hidden layer ``h`` — the
  same expectation as ``f(x) f(y)`` with the output layer's weights averaged exactly (lower
  variance, same mean);
* NTK: ``⟨∂f/∂θ(x), ∂f/∂θ(y)⟩`` over every weight and bias, computed per Dense layer as
  ``(w² a(x)·a(y)/n_in + b²)·(δ(x)·δ(y))`` with ``a`` the layer's input and ``δ = ∂f/∂z`` its
  back-propagated error (the exact inner product of the finite network's parameter
  gradients, without forming them).

Each entry is checked to ``k·SE + atol`` with the standard error SE taken from the sample of
networks; ``atol`` covers the finite-width bias (O(depth/width)).
"""
from __future__ import annotations

import math
import os

import numpy as np
import pytest

import dualcalc as dc

WIDTH = 512
K_SE = 4.5  # standard errors allowed per entry
ATOL = 0.003  # finite-width bias allowance, relative to the largest K(X, X) diagonal entry


@pytest.fixture(scope="module")
def jax_mods():
    try:
        import jax

        jax.config.update("jax_enable_x64", True)  # as tests/test_branches.py: float64 throughout
        import jax.numpy as jnp
        from jax.scipy.special import erf
    except Exception as err:  # noqa: BLE001 - any import failure means "not available"
        pytest.skip(f"jax is not importable ({type(err).__name__}: {err}); "
                    "pip install 'dualcalc[bench]' to run the finite-network Monte Carlo")
    return jax, jnp, erf


# ----------------------------------------------------------------------------------------------
# finite networks: a spec is a nested tuple
#   ("dense", w, b) | ("act", name) | ("serial", [specs]) | ("fanout", n) | ("parallel", [specs])
#   | ("sum",) | ("prod",) | ("id",) | ("ln", eps)
# The final Dense of width 1 is not part of the spec (it is the output layer, handled apart).
def _act(name, jnp, erf):
    return {"relu": lambda t: jnp.maximum(t, 0.0), "erf": erf, "tanh": jnp.tanh}[name]


def _dense_params(spec):
    """(w, b) of every hidden Dense in the order the forward pass meets them."""
    kind = spec[0]
    if kind == "dense":
        return [(spec[1], spec[2])]
    if kind in ("serial", "parallel"):
        return [p for s in spec[1] for p in _dense_params(s)]
    return []


def _forward(spec, x, dense, jnp, erf):
    kind = spec[0]
    if kind == "dense":
        return dense(spec[1], spec[2], x)
    if kind == "act":
        return _act(spec[1], jnp, erf)(x)
    if kind == "serial":
        for s in spec[1]:
            x = _forward(s, x, dense, jnp, erf)
        return x
    if kind == "fanout":
        return (x,) * spec[1]
    if kind == "parallel":
        assert isinstance(x, tuple) and len(x) == len(spec[1])
        return tuple(_forward(s, xi, dense, jnp, erf) for s, xi in zip(spec[1], x, strict=True))
    if kind == "sum":
        return sum(x[1:], x[0])
    if kind == "prod":
        out = x[0]
        for xi in x[1:]:
            out = out * xi
        return out
    if kind == "id":
        return x
    if kind == "ln":  # per point over the channels, as neural-tangents' LayerNorm apply_fn
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        return (x - mean) / jnp.sqrt(spec[1] + var)
    raise AssertionError(kind)


def _fan_ins(spec, dim, width, acc):
    """Append each hidden Dense's input width to ``acc`` (forward order); return the output width(s)."""
    kind = spec[0]
    if kind == "dense":
        acc.append(dim)
        return width
    if kind == "serial":
        for s in spec[1]:
            dim = _fan_ins(s, dim, width, acc)
        return dim
    if kind == "fanout":
        return (dim,) * spec[1]
    if kind == "parallel":
        return tuple(_fan_ins(s, di, width, acc) for s, di in zip(spec[1], dim, strict=True))
    if kind in ("sum", "prod"):
        return dim[0]
    return dim


def _mc(jax_mods, spec, out, Z, n_nets, seed, width=WIDTH, chunk=10):
    """Per-network NNGP and NTK matrices on the points Z, shape (n_nets, N, N) each.

    The weights are drawn with NumPy (4× faster than jax.random on CPU) and passed in chunks."""
    jax, jnp, erf = jax_mods
    layers = _dense_params(spec)
    n_ins = []
    _fan_ins(spec, Z.shape[1], width, n_ins)
    L = len(layers)
    assert len(n_ins) == L
    w_o, b_o = out
    Z = jnp.asarray(Z, dtype=jnp.float64)
    N = Z.shape[0]

    def one(Ws, betas, V, beta_o):
        def run(eps):
            inputs = []

            def dense(w, b, h):
                i = len(inputs)
                inputs.append(h)
                return w / math.sqrt(h.shape[-1]) * (h @ Ws[i]) + b * betas[i] + eps[i]

            h = _forward(spec, Z, dense, jnp, erf)
            f = w_o / math.sqrt(h.shape[-1]) * (h @ V) + b_o * beta_o
            # points do not interact (LayerNorm is per point): ∂(Σ_p f_p)/∂eps[:, p] = δ(x_p)
            return f.sum(), (h, inputs)

        delta, (h, inputs) = jax.grad(run, has_aux=True)(jnp.zeros((L, N, width)))
        K = w_o**2 * (h @ h.T) / h.shape[-1] + b_o**2
        T = K  # output layer: δ = 1
        for i, (w, b) in enumerate(layers):
            a = inputs[i]
            T = T + (w**2 * (a @ a.T) / a.shape[-1] + b**2) * (delta[i] @ delta[i].T)
        return K, T

    batched = jax.jit(jax.vmap(one))
    rng = np.random.default_rng(seed)
    Ks, Ts = [], []
    for start in range(0, n_nets, chunk):
        m = min(chunk, n_nets - start)
        Ws = [rng.standard_normal((m, n_in, width)) for n_in in n_ins]
        betas = [rng.standard_normal((m, width)) for _ in n_ins]
        K, T = batched(Ws, betas, rng.standard_normal((m, width)), rng.standard_normal(m))
        Ks.append(np.asarray(K))
        Ts.append(np.asarray(T))
    return np.concatenate(Ks), np.concatenate(Ts)


_stats = {}  # name -> (max |MC − dc|/SE, max SE/scale, max |MC − dc|/scale); printed by test_report


def _check(name, est, exact, scale):
    """Every entry within K_SE standard errors (from the sample) + ATOL·scale."""
    mean = est.mean(axis=0)
    se = est.std(axis=0, ddof=1) / np.sqrt(est.shape[0])
    err = np.abs(mean - exact)
    _stats[name] = (float(np.max(err / se)), float(se.max() / scale), float(err.max() / scale))
    bad = err > K_SE * se + ATOL * scale
    assert not bad.any(), (name, f"max |MC-dc|/SE = {np.max(err / se):.2f}", f"max |MC-dc|/scale = "
                           f"{err.max() / scale:.4f}", f"max SE/scale = {se.max() / scale:.4f}")


def _data(n, d=3, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * scale * rng.uniform(0.5, 1.5, size=(n, 1))


X, Y = _data(5, seed=21, scale=0.9), _data(4, seed=22, scale=1.3)


def _compare(jax_mods, name, dc_net, spec, out, n_nets, seed):
    """MC of the finite net ``spec`` (+ output Dense ``out``) against ``dc_net`` on K(X, X) and K(X, Y)."""
    Z = np.vstack([X, Y])
    Ks, Ts = _mc(jax_mods, spec, out, Z, n_nets, seed)
    n = X.shape[0]
    kxx = dc_net.kernel(X, backend="numpy")
    kxy = dc_net.kernel(X, Y, backend="numpy")
    for what, est in (("nngp", Ks), ("ntk", Ts)):
        xx, xy = getattr(kxx, what), getattr(kxy, what)
        scale = np.abs(np.diag(xx)).max()  # one scale (the K(X, X) diagonal) for both blocks
        _check(f"{name}/{what}/XX", est[:, :n, :n], xx, scale)
        _check(f"{name}/{what}/XY", est[:, :n, n:], xy, scale)


# ----------------------------------------------------------------------------------------------
# the oracle itself on a serial net (a bug in the oracle shows here first)
@pytest.mark.parametrize("act", ["relu", "erf"])
def test_oracle_matches_serial_net(jax_mods, act):
    a = dc.activation(act)
    net = dc.serial(dc.Dense(1.4, 0.2), a, dc.Dense(1.3, 0.1), a, dc.Dense(0.9, 0.3))
    spec = ("serial", [("dense", 1.4, 0.2), ("act", act), ("dense", 1.3, 0.1), ("act", act)])
    _compare(jax_mods, f"serial-{act}", net, spec, (0.9, 0.3), n_nets=200, seed=1)


def test_oracle_detects_a_wrong_kernel(jax_mods):
    """The tolerance can fail: a 10% change of one weight variance (≈ 9% of the NNGP) is caught.
    (At 200 networks it resolves ≈ 4.5·SE + ATOL ≈ 4.5% of the scale on this relu net.)"""
    a = dc.activation("relu")
    net = dc.serial(dc.Dense(1.4, 0.2), a, dc.Dense(1.3 * math.sqrt(1.10), 0.1), a, dc.Dense(0.9, 0.3))
    spec = ("serial", [("dense", 1.4, 0.2), ("act", "relu"), ("dense", 1.3, 0.1), ("act", "relu")])
    with pytest.raises(AssertionError):
        _compare(jax_mods, "serial-wrong", net, spec, (0.9, 0.3), n_nets=200, seed=1)


# ----------------------------------------------------------------------------------------------
# branched networks: (dualcalc network, finite spec, output Dense) builders
def _residual(act):
    """serial(Dense, block, block, Dense) with block = FanOut(2) → (act, Dense, act, Dense | Identity)
    → FanInSum: the finite net adds the branch outputs channel by channel."""
    a = dc.activation(act)
    block = dc.serial(dc.FanOut(2), dc.parallel(dc.serial(a, dc.Dense(1.0, 0.1), a, dc.Dense(1.0, 0.1)),
                                                dc.Identity()), dc.FanInSum())
    net = dc.serial(dc.Dense(1.0, 0.1), block, block, dc.Dense(1.0, 0.1))
    sblock = ("serial", [("fanout", 2), ("parallel", [("serial", [("act", act), ("dense", 1.0, 0.1), ("act", act),
                                                                   ("dense", 1.0, 0.1)]), ("id",)]), ("sum",)])
    return net, ("serial", [("dense", 1.0, 0.1), sblock, sblock]), (1.0, 0.1)


def _layernorm(act):
    """serial(Dense, LayerNorm, act, Dense): the finite net subtracts the channel mean and divides
    by √(var + eps) per point (neural-tangents' apply_fn); the kernel omits the mean, which
    vanishes at infinite width."""
    a = dc.activation(act)
    net = dc.serial(dc.Dense(1.2, 0.1), dc.LayerNorm(), a, dc.Dense(1.2, 0.1))
    return net, ("serial", [("dense", 1.2, 0.1), ("ln", 1e-12), ("act", act)]), (1.2, 0.1)


_PROD_DOC = """FanInProd's kernel (neural-tangents' and dualcalc's) is the product of the branch kernels,
Θ = Σ_i Θ_i Π_(j≠i) K_j: it assumes independent branches (neural-tangents warns "FanIn layers
assume independent inputs ... have at least one Dense layer in each branch")."""


def _prod(act, form):
    """serial(Dense, FanOut(2), parallel(act, serial(act, Dense, act)), FanInProd(), Dense).

    The kernel assumes independent branches (see _PROD_DOC). Two finite nets:
    * "shared", the net as written, both branches reading the same pre-activation z:
      act(z_i)·act(z'_i) with z' = Dense(act(z)). Channel by channel, z'_i depends on z_i only
      through one of its n terms, so the pair is independent at infinite width (and the
      gradients' cross terms vanish as 1/√n): the formula holds for this net too;
    * "own", each branch with its own copy of the first Dense, parallel(serial(Dense, act),
      serial(Dense, act, Dense, act)): independent by construction, the case the formula states
      (dualcalc gives both the same kernel: test_fan_in_prod_forms_agree)."""
    a = dc.activation(act)
    net = dc.serial(dc.Dense(1.2, 0.1), dc.FanOut(2), dc.parallel(a, dc.serial(a, dc.Dense(1.0, 0.1), a)),
                    dc.FanInProd(), dc.Dense(1.0, 0.1))
    branch2 = [("act", act), ("dense", 1.0, 0.1), ("act", act)]
    if form == "shared":
        spec = ("serial", [("dense", 1.2, 0.1), ("fanout", 2), ("parallel", [("act", act), ("serial", branch2)]),
                           ("prod",)])
    else:
        spec = ("serial", [("fanout", 2), ("parallel", [("serial", [("dense", 1.2, 0.1), ("act", act)]),
                                                        ("serial", [("dense", 1.2, 0.1)] + branch2)]), ("prod",)])
    return net, spec, (1.0, 0.1)


NETS = {"residual": _residual, "layernorm": _layernorm,
        "prod-shared": lambda act: _prod(act, "shared"), "prod-own": lambda act: _prod(act, "own")}
SEEDS = {"residual": 2, "layernorm": 3, "prod-shared": 4, "prod-own": 5}


@pytest.mark.parametrize("act", ["relu", "erf"])
@pytest.mark.parametrize("kind", list(NETS))
def test_branched_net(jax_mods, kind, act):
    net, spec, out = NETS[kind](act)
    _compare(jax_mods, f"{kind}-{act}", net, spec, out, n_nets=200, seed=SEEDS[kind])


_SLOW = pytest.mark.skipif(not os.environ.get("DUALCALC_RUN_SLOW"),
                           reason="20–70 s each (4 min in all); set DUALCALC_RUN_SLOW=1")


@_SLOW
@pytest.mark.parametrize("act", ["relu", "erf"])
@pytest.mark.parametrize("kind", list(NETS))
def test_branched_net_many_networks(jax_mods, kind, act):
    """10× the networks (SE ≈ 0.1–0.5% of the scale): the finite-width bias must stay within ATOL."""
    net, spec, out = NETS[kind](act)
    _compare(jax_mods, f"slow-{kind}-{act}", net, spec, out, n_nets=2000, seed=100 + SEEDS[kind])


@pytest.mark.parametrize("act", ["relu", "erf"])
def test_fan_in_prod_forms_agree(act):
    """dualcalc: one shared first Dense or a copy in each branch, the same kernel (the formula
    treats the branches as independent either way)."""
    a = dc.activation(act)
    net = _prod(act, "shared")[0]
    copies = dc.serial(dc.FanOut(2), dc.parallel(dc.serial(dc.Dense(1.2, 0.1), a),
                                                 dc.serial(dc.Dense(1.2, 0.1), a, dc.Dense(1.0, 0.1), a)),
                       dc.FanInProd(), dc.Dense(1.0, 0.1))
    for k1, k2 in ((net.kernel(X, backend="numpy"), copies.kernel(X, backend="numpy")),
                   (net.kernel(X, Y, backend="numpy"), copies.kernel(X, Y, backend="numpy"))):
        np.testing.assert_allclose(k1.nngp, k2.nngp, rtol=1e-12)
        np.testing.assert_allclose(k1.ntk, k2.ntk, rtol=1e-12)


def test_fan_in_prod_of_dependent_branches(jax_mods):
    """serial(Dense, FanOut(2), parallel(relu, Identity), FanInProd(), Dense): the finite net as
    written multiplies relu(z)·z = relu(z)², which the product formula (see _PROD_DOC) does not
    describe — the Monte Carlo is far from it — while the net with a Dense in each branch,
    parallel(serial(Dense, relu), Dense), matches it."""
    a = dc.activation("relu")
    net = dc.serial(dc.Dense(1.2, 0.1), dc.FanOut(2), dc.parallel(a, dc.Identity()), dc.FanInProd(),
                    dc.Dense(1.0, 0.1))
    shared = ("serial", [("dense", 1.2, 0.1), ("fanout", 2), ("parallel", [("act", "relu"), ("id",)]), ("prod",)])
    with pytest.raises(AssertionError, match="MC-dc"):
        _compare(jax_mods, "prod-dependent-shared", net, shared, (1.0, 0.1), n_nets=100, seed=6)
    z, _, err = _stats["prod-dependent-shared/nngp/XX"]
    assert z > 50 and err > 0.5  # not a near miss: a different kernel (measured: 104 SE, 211% of the scale)
    own = ("serial", [("fanout", 2), ("parallel", [("serial", [("dense", 1.2, 0.1), ("act", "relu")]),
                                                   ("dense", 1.2, 0.1)]), ("prod",)])
    _compare(jax_mods, "prod-dependent-own", net, own, (1.0, 0.1), n_nets=1000, seed=7)  # cheap net


def test_report():
    """Last: with DUALCALC_MC_REPORT=1 and -s, prints the measured figures of the tests above."""
    if os.environ.get("DUALCALC_MC_REPORT"):
        for name, (z, se, err) in sorted(_stats.items()):
            print(f"{name:30s} max|MC-dc|/SE={z:6.2f}  max SE/scale={se:.4f}  max|MC-dc|/scale={err:.4f}")
