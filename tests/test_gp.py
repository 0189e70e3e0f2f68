"""scikit-learn interop: GPKernel inside GaussianProcessRegressor/Classifier, KernelRegressor.

Oracles: net.kernel (the kernel itself), scikit-learn's own GP posterior against dc.predict's
(two independent implementations), brute-force leave-one-out refits for the ridge search.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.gaussian_process import GaussianProcessClassifier, GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, WhiteKernel
from sklearn.model_selection import cross_val_score
from sklearn.preprocessing import StandardScaler

import dualcalc as dc
from dualcalc import predict as P
from dualcalc.errors import ParameterError
from dualcalc.gp import GPKernel, KernelRegressor

NET = dc.serial(dc.Dense(1.2, 0.3), "relu", dc.Dense(1.2, 0.3), "gelu", dc.Dense(1.0, 0.0))


def _diabetes():
    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    y = (y - y.mean()) / y.std()
    return X[:300], y[:300], X[300:], y[300:]


def test_kernel_equals_network_kernel():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(9, 4)), rng.normal(size=(5, 4))
    for get in ("nngp", "ntk"):
        k = GPKernel(NET, get=get, backend="numpy")
        ref = NET.kernel(X, Y, backend="numpy")
        np.testing.assert_array_equal(k(X, Y), getattr(ref, get))
        K, dK = k(X, eval_gradient=True)
        np.testing.assert_allclose(K, getattr(NET.kernel(X, backend="numpy"), get), rtol=1e-15, atol=0)
        assert dK.shape == (9, 9, 0)
        np.testing.assert_allclose(k.diag(X), np.diag(K), rtol=1e-13)
        assert not k.is_stationary() and k.requires_vector_input and k.n_dims == 0
    # the cached matrix is handed out as a copy: scikit-learn adds alpha in place
    k = GPKernel(NET, backend="numpy")
    k(X)[0, 0] += 1.0
    np.testing.assert_array_equal(k(X), NET.kernel(X, backend="numpy").nngp)


def test_clone_and_params():
    k = ConstantKernel(2.0) * GPKernel(NET, backend="numpy") + WhiteKernel(0.1)
    params = k.get_params()
    assert params["k1__k2__net"] is NET and params["k1__k2__get"] == "nngp"
    c = clone(k)
    assert c.get_params()["k1__k2__net"] is NET and c == k and c is not k
    np.testing.assert_allclose(k.theta, np.log([2.0, 0.1]))
    c2 = k.clone_with_theta(np.log([3.0, 0.5]))
    X = np.random.default_rng(1).normal(size=(6, 3))
    np.testing.assert_allclose(c2(X), 3.0 * NET.kernel(X, backend="numpy").nngp + 0.5 * np.eye(6), rtol=1e-14)
    np.testing.assert_allclose(c2.diag(X), np.diag(c2(X)), rtol=1e-13)
    assert "GPKernel" in repr(k)


def test_gaussian_process_regressor_diabetes():
    """Hyperparameters optimised (scale and noise), a held-out R² well above 0, and the fitted posterior
    equal to dc.predict.gp_inference on the fitted kernel."""
    Xtr, ytr, Xte, yte = _diabetes()
    kernel = ConstantKernel(1.0) * GPKernel(NET, backend="numpy") + WhiteKernel(1.0)
    gpr = GaussianProcessRegressor(kernel=kernel, random_state=0).fit(Xtr, ytr)
    assert gpr.log_marginal_likelihood_value_ > gpr.log_marginal_likelihood(kernel.theta) + 1.0
    c, noise = np.exp(gpr.kernel_.theta)
    assert 0.0 < noise < 1.0  # diabetes is noisy but not all noise
    assert gpr.score(Xte, yte) > 0.35  # a linear model gets ≈ 0.45 here
    mean, cov = gpr.predict(Xte, return_cov=True)
    K = NET.kernel(Xtr, backend="numpy").nngp
    Kt = NET.kernel(Xte, Xtr, backend="numpy").nngp
    Ktt = NET.kernel(Xte, backend="numpy").nngp
    alpha = gpr.alpha  # scikit-learn's jitter 1e-10, absolute
    post = P.gp_inference(c * K + noise * np.eye(len(K)), ytr, diag_reg=alpha, diag_reg_absolute_scale=True)(
        "nngp", c * Kt, c * Ktt + noise * np.eye(len(Ktt)))
    np.testing.assert_allclose(mean, post.mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(cov, post.covariance, rtol=1e-8, atol=1e-10)


def test_gaussian_process_classifier():
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    idx = np.random.default_rng(0).permutation(len(y))
    tr, te = idx[:120], idx[120:300]
    gpc = GaussianProcessClassifier(kernel=ConstantKernel(1.0) * GPKernel(NET, backend="numpy"), random_state=0)
    gpc.fit(X[tr], y[tr])
    assert gpc.score(X[te], y[te]) > 0.9
    assert np.allclose(gpc.predict_proba(X[te]).sum(axis=1), 1.0)


def test_kernel_regressor_leave_one_out_is_exact():
    """The eigendecomposition LOO errors equal n brute-force refits, for every candidate ridge."""
    Xtr, ytr, Xte, yte = _diabetes()
    X, y = Xtr[:40], np.column_stack([ytr[:40], ytr[40:80]])
    alphas = (1e-3, 1e-2, 1e-1, 1.0)
    reg = KernelRegressor(NET, alphas=alphas, backend="numpy").fit(X, y)
    K = NET.kernel(X, backend="numpy").ntk
    lam0 = np.mean(np.diag(K))
    brute = []
    for a in alphas:
        res = []
        for i in range(len(X)):
            keep = np.arange(len(X)) != i
            coef = np.linalg.solve(K[np.ix_(keep, keep)] + a * lam0 * np.eye(len(X) - 1), y[keep])
            res.append(K[i, keep] @ coef - y[i])
        brute.append(np.mean(np.square(res)))
    np.testing.assert_allclose(reg.cv_errors_, brute, rtol=1e-8)
    assert reg.alpha_ == alphas[int(np.argmin(brute))]
    # the fitted predictor is the t = ∞ ensemble mean with diag_reg = alpha_
    ens = P.gradient_descent_mse_ensemble(NET, X, y, diag_reg=reg.alpha_, backend="numpy")
    np.testing.assert_allclose(reg.predict(Xte[:7]), ens(None, Xte[:7], "ntk"), rtol=1e-9, atol=1e-12)


def test_kernel_regressor_kfold_and_sklearn_tools():
    Xtr, ytr, Xte, yte = _diabetes()
    reg = KernelRegressor(NET, get="nngp", cv=5, backend="numpy").fit(Xtr, ytr)
    assert reg.cv_errors_.shape == (7,) and reg.alpha_ in reg.alphas
    assert reg.predict(Xte).shape == yte.shape
    assert reg.score(Xte, yte) > 0.35
    fixed = KernelRegressor(NET, alphas=0.1, backend="numpy").fit(Xtr[:50], ytr[:50])
    assert fixed.alpha_ == 0.1
    c = clone(reg)
    assert c.get_params()["cv"] == 5 and not hasattr(c, "dual_coef_")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        scores = cross_val_score(KernelRegressor(NET, alphas=(1e-2, 1e-1, 1.0), backend="numpy"), Xtr[:150],
                                 ytr[:150], cv=3)
    assert scores.shape == (3,) and np.all(scores > 0.0)


def test_bad_input():
    with pytest.raises(ParameterError, match="Network"):
        GPKernel("relu")
    with pytest.raises(ParameterError, match="get"):
        GPKernel(NET, get="cov")
    with pytest.raises(ParameterError, match="alphas"):
        KernelRegressor(NET, alphas=(-1.0,), backend="numpy").fit(np.eye(3), np.ones(3))
    with pytest.raises(ValueError, match="gradient"):
        GPKernel(NET, backend="numpy")(np.eye(3), np.eye(3), eval_gradient=True)
