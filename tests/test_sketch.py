"""Sketches (issue 5): primitives, PolySketch, KernelSketch, homogeneous embedding, ridge.

Oracles: exact inner products (unbiasedness as a mean over seeds, within 5 standard errors),
scikit-learn's PolynomialCountSketch (a TensorSketch of the same polynomial kernel), the exact
kernel ``net.kernel(X, backend="numpy")``, and the NumPy reference of the generated kernels.
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse

import dualcalc as dc
from codegen import sketch_cuda, sketch_numba
from dualcalc.sketch import PolySketch
from dualcalc.sketch.kernel_sketch import _weight_plan
from dualcalc.sketch.srht import SRHT, CountSketch, TensorSRHT, to_real


def _mean_se(vals):
    vals = np.asarray(vals)
    return vals.mean(axis=0), vals.std(axis=0, ddof=1) / np.sqrt(len(vals))


def _unit_pair(rng, d, rho_hint=0.6, complex_=False):
    x = rng.standard_normal(d) + (1j * rng.standard_normal(d) if complex_ else 0)
    y = rho_hint * x + (rng.standard_normal(d) + (1j * rng.standard_normal(d) if complex_ else 0))
    return x / np.linalg.norm(x), y / np.linalg.norm(y)


def _rel(Z, K):
    return float(np.linalg.norm(Z @ Z.T - K) / np.linalg.norm(K))


def _floor(K, m):
    """Expected error of ideal i.i.d. Gaussian random features of K (m of them)."""
    return float(np.sqrt((np.trace(K) ** 2 + np.linalg.norm(K) ** 2) / m) / np.linalg.norm(K))


# ---------------------------------------------------------------------------------------------
# primitives
@pytest.mark.parametrize("complex_", [False, True])
def test_srht_unbiased(complex_):
    rng = np.random.default_rng(0)
    x, y = _unit_pair(rng, 24, complex_=complex_)
    X = np.stack([x, y])
    est = []
    for s in range(1500):
        S = SRHT(24, 8, np.random.default_rng(s))(X, np.complex128)
        est.append(np.vdot(S[1], S[0]))  # Σ S0 conj(S1) = estimate of ⟨x, y⟩
    est = np.array(est)
    target = np.vdot(y, x)
    for part in (np.real, np.imag):
        mean, se = _mean_se(part(est))
        assert abs(mean - part(target)) < 5 * se + 1e-12


def test_srht_exact_when_not_compressing():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((5, 16))
    S = SRHT(16, 16, rng)(X, np.complex128)  # all frequencies: Parseval, no error
    assert np.allclose(np.real(S @ S.conj().T), X @ X.T)


def test_tensor_srht_unbiased():
    rng = np.random.default_rng(2)
    x1, y1 = _unit_pair(rng, 10)
    x2, y2 = _unit_pair(rng, 7, rho_hint=-0.8)
    A = np.stack([x1, y1])
    B = np.stack([x2, y2])
    est = []
    for s in range(3000):
        T = TensorSRHT(10, 7, 6, np.random.default_rng(s))(A, B, np.complex128)
        est.append(np.real(np.vdot(T[1], T[0])))
    mean, se = _mean_se(est)
    assert abs(mean - (x1 @ y1) * (x2 @ y2)) < 5 * se


def test_real_features_unbiased_any_dimension():
    """to_real: Re and Im parts carry half each (uniform phases), so odd m is unbiased too."""
    rng = np.random.default_rng(3)
    x, y = _unit_pair(rng, 12)
    X = np.stack([x, y])
    for m in (5, 6):
        est = []
        for s in range(3000):
            Z = to_real(SRHT(12, (m + 1) // 2, np.random.default_rng(s))(X, np.complex128), m)
            assert Z.shape == (2, m) and Z.dtype == np.float64
            est.append(Z[0] @ Z[1])
        mean, se = _mean_se(est)
        assert abs(mean - x @ y) < 5 * se


def test_countsketch_unbiased_and_sparse_equals_dense():
    rng = np.random.default_rng(4)
    x, y = _unit_pair(rng, 40)
    X = np.stack([x, y])
    est = [np.real(np.vdot(*CountSketch(40, 9, np.random.default_rng(s))(X, np.complex128)[::-1]))
           for s in range(3000)]
    mean, se = _mean_se(est)
    assert abs(mean - x @ y) < 5 * se
    Xs = scipy.sparse.random(6, 40, density=0.2, random_state=0, format="csr")
    cs = CountSketch(40, 9, rng)
    assert np.allclose(cs(Xs, np.complex128), cs(Xs.toarray(), np.complex128))


# ---------------------------------------------------------------------------------------------
# PolySketch
def test_polysketch_all_degrees_unbiased():
    rng = np.random.default_rng(5)
    x, y = _unit_pair(rng, 12, rho_hint=1.0)
    X = np.stack([x, y])
    L = 6
    est = []
    for s in range(800):
        U = PolySketch(12, L, 16, np.random.default_rng(s)).transform(X, np.complex128)
        est.append([np.real(np.vdot(U[l][1], U[l][0])) for l in range(L)])
    mean, se = _mean_se(est)
    target = (x @ y) ** np.arange(1, L + 1)
    assert np.all(np.abs(mean - target) < 5 * se + 1e-12)


@pytest.mark.parametrize("p", [2, 3, 4])
def test_polysketch_beats_tensorsketch(p):
    """Same polynomial kernel, same real dimension: the TensorSRHT tree is at least as accurate
    as scikit-learn's PolynomialCountSketch (TensorSketch), on average over seeds."""
    from sklearn.kernel_approximation import PolynomialCountSketch

    rng = np.random.default_rng(6)
    X = rng.standard_normal((30, 16))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    G = (X @ X.T) ** p
    ours, theirs = [], []
    for s in range(12):
        U = PolySketch(16, p, 64, np.random.default_rng(s)).transform(X, np.complex128)[p - 1]
        ours.append(np.mean((np.real(U @ U.conj().T) - G) ** 2))
        Z = PolynomialCountSketch(degree=p, gamma=1, coef0=0, n_components=128, random_state=s).fit_transform(X)
        theirs.append(np.mean((Z @ Z.T - G) ** 2))
    assert np.mean(ours) < 1.25 * np.mean(theirs)


def test_polysketch_countsketch_leaves_sparse():
    rng = np.random.default_rng(7)
    Xs = scipy.sparse.random(20, 500, density=0.05, random_state=1, format="csr")
    Xd = Xs.toarray()
    ps = PolySketch(500, 3, 32, rng, leaves="countsketch", leaf_dim=64)
    Us, Ud = ps.transform(Xs, np.complex128), ps.transform(Xd, np.complex128)
    for a, b in zip(Us, Ud):
        assert np.allclose(a, b)


# ---------------------------------------------------------------------------------------------
# generated weighting kernels
@pytest.mark.parametrize("L", [1, 2, 5])
@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
def test_generated_weighting_matches_reference(L, dtype):
    rng = np.random.default_rng(8)
    n, du, m = 7, 5, 40
    ms = m - du - 1
    u = (rng.standard_normal((n, du)) + 1j * rng.standard_normal((n, du))).astype(dtype)
    blocks = [(rng.standard_normal((n, ms)) + 1j * rng.standard_normal((n, ms))).astype(dtype) for _ in range(L - 1)]
    R = rng.standard_normal((n, L + 1))
    s = rng.random(n)
    plan = _weight_plan(rng, du, L, m, ms)
    got = sketch_numba.run_weighting(u, blocks, R, s, plan, derivative=True, backend="numba")
    ref = sketch_numba.weighting_reference(u, blocks, R, s, plan, derivative=True)
    tol = 1e-5 if dtype == np.complex64 else 1e-12
    for g, r in zip(got, ref):
        assert np.allclose(g, r, atol=tol, rtol=tol)
    src = sketch_numba.weighting_source(L)
    assert "def weight(" in src and f"degree={L}" in src


def test_cuda_source_compiles_to_ptx():
    for L in (1, 3):
        for real in ("float", "double"):
            src = sketch_cuda.weighting_source_cuda(L, real=real)
            assert f"sketch_blocks_L{L}" in src and f"sketch_scatter_L{L}" in src
    if not sketch_cuda.nvrtc_available():
        pytest.skip("NVRTC (libnvrtc from the 'cuda' extra) is not installed: CUDA source not compiled")
    ptx = sketch_cuda.compile_ptx(sketch_cuda.weighting_source_cuda(4, real="double"))
    assert ".entry sketch_blocks_L4" in ptx and ".entry sketch_scatter_L4" in ptx


@pytest.mark.gpu
def test_cuda_path_agrees_in_distribution():  # pragma: no cover - needs a GPU
    cupy = pytest.importorskip("cupy")
    try:
        n_gpu = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CuPy installed, no driver/device
        pytest.skip(f"no usable GPU ({type(e).__name__})")
    if n_gpu == 0:
        pytest.skip("no GPU")
    X, net = _data_and_net("relu", n=150)
    K = net.kernel(X, backend="numpy").ntk
    ec = [_rel(dc.KernelSketch(net, 2048, random_state=s, degree=4, backend="cuda").fit_transform(X), K)
          for s in range(4)]
    en = [_rel(dc.KernelSketch(net, 2048, random_state=s, degree=4, backend="numba").fit_transform(X), K)
          for s in range(4)]
    assert abs(np.mean(ec) - np.mean(en)) < 0.5 * np.mean(en)


# ---------------------------------------------------------------------------------------------
# KernelSketch against the exact kernel
def _data_and_net(name, n=200, d=32, W=1.0, b=0.5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, (n, 1))  # varied norms
    act = dc.activation(name)
    return X, dc.serial(dc.Dense(W, b), act, dc.Dense(W, b), act, dc.Dense(W, b))


_EXACT: dict = {}


def _exact(name):
    if name not in _EXACT:
        X, net = _data_and_net(name)
        _EXACT[name] = (X, net, net.kernel(X, backend="numpy"))
    return _EXACT[name]


@pytest.mark.parametrize("name", ["relu", "gelu", "tanh"])
@pytest.mark.parametrize("kernel", ["nngp", "ntk"])
def test_kernel_sketch_error_bound(name, kernel):
    """n = 200, d = 32, m = 2048, varied norms: measured 0.01–0.03 (NNGP), 0.04–0.07 (NTK)."""
    X, net, k = _exact(name)
    K = getattr(k, kernel)
    sk = dc.KernelSketch(net, 2048, kernel=kernel, random_state=0, degree=4)
    Z = sk.fit_transform(X)
    assert Z.shape == (200, 2048) and Z.dtype == np.float64
    assert sk.method_ == "layerwise"
    assert _rel(Z, K) < (0.06 if kernel == "nngp" else 0.12)


def test_kernel_sketch_auto_degree_and_convergence():
    X, net, k = _exact("tanh")  # Hermite-method activation: norm-aware r_l(q)
    assert net.layers[1].dual.method == "hermite"
    errs = []
    for m in (256, 4096):
        sk = dc.KernelSketch(net, m, kernel="ntk", random_state=1)
        errs.append(_rel(sk.fit_transform(X), k.ntk))
        assert len(sk.degrees_) == 2 and all(1 <= L <= sk.max_degree for L in sk.degrees_)
    assert errs[1] < 0.5 * errs[0]  # ~1/√m: a 16× larger sketch, about 4× smaller error


@pytest.mark.parametrize("normalize", [False, True])
def test_kernel_sketch_mean_over_seeds_converges(normalize):
    """Averaging independent sketches removes the variance: what is left is the (small) bias of
    the normalised-correlation design (and of ``normalize``) and the truncation."""
    X, net, k = _exact("gelu")
    Ks = np.mean([(lambda Z: Z @ Z.T)(dc.KernelSketch(net, 512, kernel="nngp", random_state=s, degree=4,
                                                      normalize=normalize).fit_transform(X[:60]))
                  for s in range(24)], axis=0)
    assert np.linalg.norm(Ks - k.nngp[:60, :60]) / np.linalg.norm(k.nngp[:60, :60]) < 0.02


def test_per_layer_activations_and_standard_parameterization():
    rng = np.random.default_rng(9)
    X = rng.standard_normal((150, 20)) * rng.uniform(0.5, 2.0, (150, 1))
    net = dc.serial(dc.Dense(1.2, 0.3), dc.activation("gelu"), dc.Dense(0.9, 0.4), dc.activation("x/(1+exp(-x))"),
                    dc.Dense(1.0, 0.2))
    k = net.kernel(X, backend="numpy")
    for kernel in ("nngp", "ntk"):
        Z = dc.KernelSketch(net, 2048, kernel=kernel, random_state=0, degree=[4, 5]).fit_transform(X)
        assert _rel(Z, getattr(k, kernel)) < 0.12
    std = dc.serial(dc.Dense(1.0, 0.5, parameterization="standard"), dc.activation("relu"),
                    dc.Dense(1.0, 0.5, parameterization="standard", out_dim=None))
    with pytest.raises(dc.ParameterError):  # the exact kernel needs out_dim too
        std.kernel(X, backend="numpy")
    std = dc.serial(dc.Dense(1.0, 0.5, parameterization="standard", out_dim=64), dc.activation("relu"),
                    dc.Dense(1.0, 0.5, parameterization="standard"))
    Z = dc.KernelSketch(std, 2048, kernel="ntk", random_state=0, degree=4).fit_transform(X)
    assert _rel(Z, std.kernel(X, backend="numpy").ntk) < 0.12


def test_network_ending_with_activation_and_odd_components():
    X, _, _ = _exact("relu")
    net = dc.serial(dc.Dense(1.0, 0.5), dc.activation("relu"))
    k = net.kernel(X, backend="numpy")
    for kernel in ("nngp", "ntk"):
        K = getattr(k, kernel)
        for m in (1500, 1501):
            Z = dc.KernelSketch(net, m, kernel=kernel, random_state=0, degree=4).fit_transform(X)
            assert Z.shape == (200, m)
            assert _rel(Z, K) < 1.1 * _floor(K, m)  # this NTK is nearly diagonal: floor ≈ 0.18


# ---------------------------------------------------------------------------------------------
# homogeneous subspace embedding and sparse input
def test_homogeneous_embedding_dense():
    X, _, _ = _exact("relu")
    net = dc.serial(dc.Dense(1.5, 0.0), dc.activation("relu"), dc.Dense(1.5, 0.0), dc.activation("relu"),
                    dc.Dense(1.5, 0.0))
    k = net.kernel(X, backend="numpy")
    for kernel in ("nngp", "ntk"):
        sk = dc.KernelSketch(net, 2048, kernel=kernel, random_state=0)
        Z = sk.fit_transform(X)
        assert sk.method_ == "homogeneous" and len(sk.degrees_) == 1
        assert _rel(Z, getattr(k, kernel)) < (0.05 if kernel == "nngp" else 0.1)
    with pytest.raises(dc.ParameterError, match="bias"):
        dc.KernelSketch(_exact("relu")[1], 512, method="homogeneous").fit(X)


def test_sparse_input_not_densified():
    """A 2000 × 100 000 matrix at 0.1% density: dense it would take 1.6 GB; the sketch must stay
    far below that (tracemalloc peak), and match the exact kernel on a dense subset."""
    rng = np.random.default_rng(10)
    n, d = 2000, 100_000
    Xs = scipy.sparse.random(n, d, density=0.001, format="csr", random_state=2, dtype=np.float64)
    Xs.data = rng.standard_normal(Xs.nnz) * 3
    for method, net in (("homogeneous", dc.serial(dc.Dense(1.0, 0.0), dc.activation("relu"), dc.Dense(1.0, 0.0))),
                        ("layerwise", dc.serial(dc.Dense(1.0, 0.5), dc.activation("gelu"), dc.Dense(1.0, 0.5)))):
        sk = dc.KernelSketch(net, 1024, kernel="ntk", random_state=0, degree=3)
        tracemalloc.start()
        Z = sk.fit_transform(Xs)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert sk.method_ == method
        assert peak < 200 * 2**20, f"peak {peak / 2**20:.0f} MB"
        K = net.kernel(Xs[:150].toarray(), backend="numpy").ntk
        # nearly orthogonal sparse rows: without a bias the kernel is nearly diagonal (floor ≈ 0.18)
        assert _rel(Z[:150], K) < 1.2 * _floor(K, 1024) + 0.02


# ---------------------------------------------------------------------------------------------
# scikit-learn conventions
def test_sklearn_conventions():
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError

    X, net, _ = _exact("relu")
    sk = dc.KernelSketch(net, 256, kernel="nngp", random_state=3, degree=3)
    p = sk.get_params()
    assert p["n_components"] == 256 and p["kernel"] == "nngp" and p["net"] is net
    c = clone(sk)
    assert c.get_params()["n_components"] == 256 and not hasattr(c, "plan_")
    c.set_params(n_components=128)
    assert c.n_components == 128
    with pytest.raises(NotFittedError):
        sk.transform(X)
    sk.fit(X)
    assert sk.n_features_in_ == 32 and sk.degrees_ == [3, 3]
    Z1 = sk.transform(X)
    assert np.array_equal(Z1, sk.transform(X))  # transform is deterministic once fitted
    assert np.allclose(Z1, clone(sk).fit_transform(X))  # same random_state, same sketch
    assert np.allclose(sk.transform(X[:17]), Z1[:17])  # rows independent of each other / chunking
    sk2 = dc.KernelSketch(net, 256, kernel="nngp", random_state=3, degree=3, chunk_size=7).fit(X)
    assert np.allclose(sk2.transform(X), Z1, atol=1e-6)
    Z32 = sk.transform(X.astype(np.float32))
    assert Z32.dtype == np.float32
    assert dc.KernelSketch(net, 256, random_state=0, degree=3).fit_transform(X.astype(np.float32)).dtype == np.float32
    with pytest.raises(ValueError):
        sk.transform(X[:, :10])  # wrong number of features
    bad = X.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError):
        dc.KernelSketch(net, 64).fit(bad)
    for kw in ({"n_components": 0}, {"kernel": "rbf"}, {"method": "x"}, {"degree": 0}, {"max_degree": 0}):
        with pytest.raises(dc.ParameterError):
            dc.KernelSketch(net, **{"n_components": 64, **kw}).fit(X)
    with pytest.raises(dc.ParameterError):
        dc.KernelSketch(None, 64).fit(X)


def test_in_sklearn_pipeline():
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline

    X, net, _ = _exact("gelu")
    y = np.sin(X[:, 0])
    pipe = make_pipeline(dc.KernelSketch(net, 256, random_state=0, degree=3), Ridge(alpha=1e-3)).fit(X, y)
    assert pipe.predict(X).shape == (200,)


# ---------------------------------------------------------------------------------------------
# ridge on sketched features
def test_sketch_ridge_digits_validated_alpha():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    p = rng.permutation(len(X))
    X, y = X[p], y[p]
    Xtr, ytr, Xte, yte = X[:1200], y[:1200], X[1200:], y[1200:]
    net = dc.serial(dc.Dense(1.0, 0.5), dc.activation("relu"), dc.Dense(1.0, 0.5), dc.activation("relu"),
                    dc.Dense(1.0, 0.5))
    model = dc.SketchRidge(net, 768, kernel="ntk", degree=4, random_state=0).fit(Xtr, ytr)
    assert model.task_ == "classification"
    assert model.validation_scores_.shape == (len(model.alphas),)
    assert model.alpha_ in model.alphas
    assert model.score(Xte, yte) > 0.95
    # explicit validation set: the ridge is chosen there
    m2 = dc.SketchRidge(net, 768, degree=4, random_state=0).fit(Xtr[:900], ytr[:900],
                                                                                  X_val=Xtr[900:], y_val=ytr[900:])
    assert m2.score(Xte, yte) > 0.95


def test_sketch_ridge_regression_matches_exact_kernel_ridge():
    from dualcalc.sketch.ridge import validated_kernel_ridge

    rng = np.random.default_rng(11)
    X = rng.standard_normal((500, 8))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] ** 2 + 0.05 * rng.standard_normal(500)
    net = dc.serial(dc.Dense(1.0, 0.5), dc.activation("gelu"), dc.Dense(1.0, 0.5))
    tr, va, te = np.arange(300), np.arange(300, 400), np.arange(400, 500)
    model = dc.SketchRidge(net, 2048, task="regression", degree=6, random_state=0)
    model.fit(X[tr], y[tr], X_val=X[va], y_val=y[va])
    mse_s = np.mean((model.predict(X[te]) - y[te]) ** 2)
    k = lambda A, B: net.kernel(A, B, backend="numpy").ntk  # noqa: E731
    trva = np.concatenate([tr, va])
    pred, alpha, _ = validated_kernel_ridge(k(X[tr], X[tr]), y[tr], k(X[va], X[tr]), y[va], k(X[te], X[tr]),
                                            "regression", K_all=k(X[trva], X[trva]), K_te_all=k(X[te], X[trva]),
                                            y_all=y[trva])
    mse_e = np.mean((pred - y[te]) ** 2)
    assert mse_s < 1.5 * mse_e + 1e-3  # m = 2048 features vs 300 points: close, not equal
