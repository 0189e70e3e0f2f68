"""dc.predict: infinite-ensemble predictions against independent oracles.

Oracles: neural-tangents' ``nt.predict`` (0.6.5, float64) on the same kernels and data where it
is installed; an ODE integration of linearised gradient flow (scipy.integrate.solve_ivp) for the
finite-time mean; a dense matrix exponential for the finite-time covariance.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg

import dualcalc as dc
from dualcalc import predict as P
from dualcalc.errors import InputError, ParameterError

W, B = 1.3, 0.2
NET = dc.serial(dc.Dense(W, B), "relu", dc.Dense(W, B), "erf", dc.Dense(W, B))


def _data(seed=0, n=12, m=5, d=4, k=2):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(m, d)), rng.normal(size=(n, k))


def _err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.fixture(scope="module")
def nt(neural_tangents):
    return neural_tangents


def _nt_kernel_fn(nt):
    stax = nt.stax
    return stax.serial(stax.Dense(1, W_std=W, b_std=B), stax.Relu(), stax.Dense(1, W_std=W, b_std=B), stax.Erf(),
                       stax.Dense(1, W_std=W, b_std=B))[2]


@pytest.mark.parametrize("diag_reg, absolute", [(0.0, False), (1e-3, False), (1e-2, True)])
def test_ensemble_matches_neural_tangents(nt, diag_reg, absolute):
    """Means and covariances, NNGP and NTK, t = ∞ / scalar / array of times, train and test set:
    ≤ 1e-8 relative to neural-tangents' gradient_descent_mse_ensemble on its own kernel_fn."""
    Xtr, Xte, Y = _data()
    ref = nt.predict.gradient_descent_mse_ensemble(_nt_kernel_fn(nt), Xtr, Y, learning_rate=0.7, diag_reg=diag_reg,
                                                   diag_reg_absolute_scale=absolute)
    mine = P.gradient_descent_mse_ensemble(NET, Xtr, Y, learning_rate=0.7, diag_reg=diag_reg,
                                           diag_reg_absolute_scale=absolute, backend="numpy")
    worst = {}
    for t in (None, 3.0, np.array([0.5, 10.0, 1e3])):
        for x_test in (None, Xte):
            for cov in (False, True):
                r, m = ref(t, x_test, None, cov), mine(t, x_test, None, cov)
                for g in ("nngp", "ntk"):
                    rg, mg = getattr(r, g), getattr(m, g)
                    e = max(_err(mg.mean, rg.mean), _err(mg.covariance, rg.covariance)) if cov else _err(mg, rg)
                    worst[(None if t is None else np.ndim(t), x_test is None, cov, g)] = e
    bad = {k: v for k, v in worst.items() if not v <= 1e-8}
    assert not bad, bad
    # a single string get returns the bare result, as in neural-tangents
    np.testing.assert_allclose(mine(2.0, Xte, "ntk"), np.asarray(ref(2.0, Xte, "ntk")), rtol=1e-8, atol=1e-12)


def test_gp_inference_and_gradient_descent_mse_match_neural_tangents(nt):
    Xtr, Xte, Y = _data(1)
    K, Kt, Ktt = NET.kernel(Xtr, backend="numpy"), NET.kernel(Xte, Xtr, backend="numpy"), NET.kernel(Xte, backend="numpy")
    rng = np.random.default_rng(3)
    f0, ft0 = rng.normal(size=Y.shape), rng.normal(size=(Xte.shape[0], Y.shape[1]))
    for reg, absolute in ((0.0, False), (1e-2, False), (1e-3, True)):
        r = nt.predict.gp_inference(K, Y, reg, absolute)(None, Kt, Ktt)
        m = P.gp_inference(K, Y, reg, absolute)(None, Kt, Ktt)
        for g in ("nngp", "ntk"):
            assert _err(getattr(m, g).mean, getattr(r, g).mean) <= 1e-8
            assert _err(getattr(m, g).covariance, getattr(r, g).covariance) <= 1e-8
        r = nt.predict.gradient_descent_mse(K.ntk, Y, 0.5, reg, absolute)
        m = P.gradient_descent_mse(K.ntk, Y, 0.5, reg, absolute)
        for t in (None, 2.0, [1.0, 5.0]):
            a, c = r(t, f0, ft0, Kt.ntk), m(t, f0, ft0, Kt.ntk)
            assert _err(c[0], a[0]) <= 1e-8 and _err(c[1], a[1]) <= 1e-8


def test_finite_time_mean_is_gradient_flow():
    """Mean at t from integrating linearised gradient flow df/dτ = −Θ(f − Y)/N, df_*/dτ = −Θ_*(f − Y)/N
    (f(0) = 0, N = Y.size) with an adaptive ODE solver; covariance against expm."""
    Xtr, Xte, Y = _data(2, n=8, m=3, k=2)
    K, Kt = NET.kernel(Xtr, backend="numpy"), NET.kernel(Xte, Xtr, backend="numpy")
    Ktt = NET.kernel(Xte, backend="numpy").nngp
    n, k = Y.shape
    N = Y.size
    lr, t = 0.8, 4.0

    def rhs(_, z):
        f = z[: n * k].reshape(n, k)
        r = (f - Y) / N
        return np.concatenate([(-K.ntk @ r).ravel(), (-Kt.ntk @ r).ravel()])

    sol = scipy.integrate.solve_ivp(rhs, (0, lr * t), np.zeros((n + Xte.shape[0]) * k), rtol=1e-12, atol=1e-14)
    f_te = sol.y[n * k:, -1].reshape(-1, k)
    fn = P.gradient_descent_mse_ensemble(NET, Xtr, Y, learning_rate=lr, backend="numpy")
    got = fn(t, Xte, "ntk", compute_cov=True)
    assert _err(got.mean, f_te) < 1e-9
    # covariance: f_*(τ) = f_*0 − Θ_*Θ⁻¹(I − e^{−Θτ/N}) f_0 is linear in the initial outputs (f_*0, f_0)
    M = Kt.ntk @ np.linalg.solve(K.ntk, np.eye(n) - scipy.linalg.expm(-K.ntk * lr * t / N))
    cov = Ktt - M @ Kt.nngp.T - Kt.nngp @ M.T + M @ K.nngp @ M.T
    assert _err(got.covariance, cov) < 1e-9
    # t = ∞ NNGP: the exact GP posterior
    post = fn(None, Xte, "nngp", compute_cov=True)
    np.testing.assert_allclose(post.mean, Kt.nngp @ np.linalg.solve(K.nngp, Y), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(post.covariance, Ktt - Kt.nngp @ np.linalg.solve(K.nngp, Kt.nngp.T),
                               rtol=1e-7, atol=1e-10)
    # a very large t converges to t = ∞
    assert _err(fn(1e9, Xte, "ntk"), fn(None, Xte, "ntk")) < 1e-6


def test_kernel_blocks_computed_once_and_only_when_needed():
    Xtr, Xte, Y = _data(4)
    calls = []

    def kernel_fn(x1, x2, get):
        calls.append((x1.shape[0], None if x2 is None else x2.shape[0], tuple(get)))
        return NET.kernel(x1, x2, get=get, backend="numpy")

    fn = P.gradient_descent_mse_ensemble(kernel_fn, Xtr, Y)
    fn(None, Xte, "ntk")
    assert calls == [(12, None, ("ntk",)), (5, 12, ("ntk",))]
    calls.clear()
    fn(2.0, Xte, "ntk")  # the train NTK is reused
    assert calls == [(5, 12, ("ntk",))]
    calls.clear()
    fn(None, Xte, "ntk", compute_cov=True)  # now the NNGP blocks too
    assert calls == [(12, None, ("nngp",)), (5, 12, ("nngp", "ntk")), (5, None, ("nngp",))]


def test_block_size_and_out(tmp_path):
    """The generated backend panel by panel, the train kernels written into memmaps."""
    Xtr, Xte, Y = _data(5, n=10)
    n = Xtr.shape[0]
    out = (np.lib.format.open_memmap(tmp_path / "k.npy", "w+", np.float64, (n, n)),
           np.lib.format.open_memmap(tmp_path / "t.npy", "w+", np.float64, (n, n)))
    fn = P.gradient_descent_mse_ensemble(NET, Xtr, Y, backend="numba", block_size=3, out=out)
    ref = P.gradient_descent_mse_ensemble(NET, Xtr, Y, backend="numpy")
    for g in ("nngp", "ntk"):
        assert _err(fn(5.0, Xte, g, compute_cov=True).covariance, ref(5.0, Xte, g, compute_cov=True).covariance) < 1e-11
    K = NET.kernel(Xtr, backend="numpy")
    assert _err(out[0], K.nngp) < 1e-12 and _err(out[1], K.ntk) < 1e-12


def test_single_output_and_shapes():
    Xtr, Xte, Y = _data(6, k=1)
    fn = P.gradient_descent_mse_ensemble(NET, Xtr, Y[:, 0], backend="numpy")
    assert fn(None, Xte, "nngp").shape == (5,)
    assert fn(np.ones((2, 3)), Xte, "ntk").shape == (2, 3, 5)
    g = fn(np.ones((2, 3)), Xte, "nngp", compute_cov=True)
    assert g.mean.shape == (2, 3, 5) and g.covariance.shape == (2, 3, 5, 5)
    both = fn(None, Xte)
    assert both._fields == ("nngp", "ntk")
    tr = fn(None, None, "nngp", compute_cov=True)  # the train set at t = ∞: N(Y, 0)
    np.testing.assert_array_equal(tr.mean, Y[:, 0])
    assert not tr.covariance.any()


def test_singular_kernel_is_a_clear_error_never_nan():
    Xtr, Xte, Y = _data(7)
    Xtr[3] = Xtr[0]  # a repeated training point: the kernel is singular
    Y[3] = Y[0]
    fn = P.gradient_descent_mse_ensemble(NET, Xtr, Y, backend="numpy")
    with pytest.raises(P.SingularKernelError, match="diag_reg"):
        fn(None, Xte, "nngp")
    # finite t: null directions do not train — finite values, equal to the regularised limit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = fn(np.array([1.0, 1e12]), Xte, ("nngp", "ntk"), compute_cov=True)
    for g in m:
        assert np.all(np.isfinite(g.mean)) and np.all(np.isfinite(g.covariance))
    reg = P.gradient_descent_mse_ensemble(NET, Xtr, Y, diag_reg=1e-9, backend="numpy")
    assert _err(reg(None, Xte, "nngp"), m.nngp.mean[1]) < 1e-5
    assert isinstance(P.SingularKernelError("x"), dc.DualcalcError)


def test_max_learning_rate():
    Xtr, _, Y = _data(8)
    T = NET.kernel(Xtr, backend="numpy").ntk
    lam = np.linalg.eigvalsh(T)[-1]
    assert P.max_learning_rate(T) == pytest.approx(2 * 12 / lam, rel=1e-12)
    assert P.max_learning_rate(T, y_train_size=24, momentum=0.5) == pytest.approx(2 * 1.5 * 24 / lam, rel=1e-12)
    # gradient descent on the linearised model: just below converges, just above diverges
    N = Y.size
    for factor, stable in ((0.98, True), (1.02, False)):
        eta = factor * P.max_learning_rate(T, y_train_size=N)
        f = np.zeros_like(Y)
        for _ in range(3000):
            f = f - eta / N * T @ (f - Y)
        assert (np.max(np.abs(f - Y)) < 1e-3) == stable


@pytest.mark.parametrize("call, err, match", [
    (lambda: P.gp_inference(np.eye(3), np.ones(4)), InputError, "rows"),
    (lambda: P.gp_inference(np.eye(3), np.ones(3), diag_reg=-1.0), ParameterError, "diag_reg"),
    (lambda: P.gp_inference(np.eye(3), np.ones(3))("rbf", np.eye(3)), ParameterError, "get"),
    (lambda: P.gp_inference(np.full((3, 3), np.nan), np.ones(3)), InputError, "NaN"),
    (lambda: P.gradient_descent_mse(np.eye(3), np.ones(3), learning_rate=0.0), ParameterError, "learning_rate"),
    (lambda: P.gradient_descent_mse(np.eye(3), np.ones(3))(1.0, None, np.zeros(2)), ParameterError, "k_test_train"),
    (lambda: P.gradient_descent_mse_ensemble("relu", np.eye(3), np.ones(3)), ParameterError, "Network"),
    (lambda: P.gradient_descent_mse_ensemble(NET, np.eye(3), np.ones(3), backend="numpy")(-1.0), ParameterError, "t"),
    (lambda: P.gp_inference(dc.Kernel(np.eye(3), None), np.ones(3))("ntk", np.eye(3)), ParameterError, "ntk"),
    (lambda: P.gp_inference(np.eye(3), np.ones(3))("ntk", np.eye(3), np.eye(3)), ParameterError, "nngp"),
])
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_ill_conditioned_train_kernel_warns_once_at_the_callers_line():
    """Condition number ~1e13 (positive definite, not singular): one RuntimeWarning pointing at
    this file, saying what may be lost and what to do; the same cause is not repeated."""
    from dualcalc.warn import reset

    reset()
    Q = np.linalg.qr(np.random.default_rng(3).standard_normal((3, 3)))[0]
    K = Q @ np.diag([1.0, 1.0, 1e-13]) @ Q.T
    K = 0.5 * (K + K.T)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            P.gp_inference(K, np.ones(3))("nngp", K[:1])
    hits = [w for w in caught if "ill-conditioned" in str(w.message)]
    assert len(hits) == 1 and hits[0].category is RuntimeWarning
    assert hits[0].filename == __file__ and "diag_reg" in str(hits[0].message)
