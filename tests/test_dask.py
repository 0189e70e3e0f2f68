"""Kernels, sketches and sketched ridge regression on Dask (dualcalc.distributed, docs/dask.md).

One LocalCluster (2 worker processes, 1 thread each, loopback) serves the module; the
worker-kill test runs last.  Without dask and distributed installed the module is skipped.
"""
from __future__ import annotations

import logging
import os
import pickle
import signal
import time

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

import dualcalc as dc  # noqa: E402
from dualcalc import distributed as dd  # noqa: E402
from dualcalc.errors import InputError, ParameterError  # noqa: E402

KernelSketch = getattr(dc, "KernelSketch", None)
if KernelSketch is None:  # not exported yet: the sketch package itself
    try:
        from dualcalc.sketch import KernelSketch
    except ImportError:
        KernelSketch = None
needs_sketch = pytest.mark.skipif(KernelSketch is None, reason="dualcalc.KernelSketch not available")


def _has_numba_backend() -> bool:
    try:
        from dualcalc import backends  # noqa: F401
    except ImportError:
        return False
    try:
        net = dc.serial(dc.Dense(1.0), "relu", dc.Dense(1.0))
        net.kernel(np.ones((2, 2)), backend="numba")
    except Exception:  # noqa: BLE001 - any failure: the backend has not landed (or is broken)
        return False
    return True


HAS_NUMBA = _has_numba_backend()
BACKENDS = ["numpy"] + (["numba"] if HAS_NUMBA else [])


def _net(act="relu", depth=2):
    layers = []
    for _ in range(depth):
        layers += [dc.Dense(1.5, 0.1), act]
    return dc.serial(*layers, dc.Dense(1.5, 0.1))


def _close(a, b, rtol=1e-12):
    """|a − b| ≤ rtol·max|b|: exact to round-off relative to the kernel's scale."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    assert np.max(np.abs(a - b)) <= rtol * max(np.max(np.abs(b)), 1e-300), np.max(np.abs(a - b))


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None, silence_logs=logging.ERROR)
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    return rng.standard_normal((430, 6)), rng.standard_normal((170, 6))


# -- pickling ------------------------------------------------------------------------------------
@pytest.mark.parametrize("act", ["relu", "gelu", "tanh", "x**3 + x"])
def test_network_pickles_with_plain_pickle(act):
    """Process workers receive the network by pickle: no lambdified closures in its state."""
    net = _net(act)
    X = np.random.default_rng(0).standard_normal((4, 3))
    before = net.kernel(X, backend="numpy")  # derive and evaluate first: caches are populated
    clone = pickle.loads(pickle.dumps(net))
    after = clone.kernel(X, backend="numpy")
    np.testing.assert_array_equal(after.nngp, before.nngp)
    np.testing.assert_array_equal(after.ntk, before.ntk)
    assert dd.content_token(net) == dd.content_token(pickle.loads(pickle.dumps(net)))


# -- kernels, threaded scheduler (the embedded default) -------------------------------------------
def test_kernel_threaded_symmetric_each_tile_once(data):
    X, _ = data
    net = _net("relu")
    ref = net.kernel(X, backend="numpy")
    Xd = da.from_array(X, chunks=(100, 6))  # 5 row blocks: 15 tiles on/above the diagonal
    k = net.kernel(Xd, backend="numpy")
    assert isinstance(k.nngp, da.Array) and isinstance(k.ntk, da.Array)
    assert k.ntk.shape == (430, 430) and k.ntk.chunks == (Xd.chunks[0], Xd.chunks[0])
    t0 = dd.worker_stats()["tiles"]
    nngp, ntk = dask.compute(k.nngp, k.ntk, scheduler="threads")
    assert dd.worker_stats()["tiles"] - t0 == 15  # both outputs from one run of each tile
    _close(nngp, ref.nngp)
    _close(ntk, ref.ntk)
    np.testing.assert_array_equal(ntk, ntk.T)  # lower tiles are transposes: exactly symmetric


def test_kernel_threaded_cross_mixed_inputs_and_get(data):
    X, Y = data
    net = _net("gelu")
    ref = net.kernel(X, Y, backend="numpy")
    k = net.kernel(da.from_array(X, chunks=(150, 3)), Y, backend="numpy", get="ntk")  # Y in memory
    assert k.nngp is None
    _close(k.ntk.compute(scheduler="threads"), ref.ntk)
    k32 = net.kernel(X, da.from_array(Y, chunks=(64, 6)), backend="numpy", dtype=np.float32)
    assert k32.nngp.dtype == np.float32
    np.testing.assert_allclose(k32.nngp.compute(scheduler="threads"), ref.nngp, rtol=1e-4, atol=1e-4)


def test_kernel_chunking_does_not_change_values(data):
    X, Y = data
    net = _net("relu", depth=3)
    a = net.kernel(da.from_array(X, chunks=(50, 6)), da.from_array(Y, chunks=(170, 6)), backend="numpy")
    b = net.kernel(da.from_array(X, chunks=(430, 2)), da.from_array(Y, chunks=(33, 6)), backend="numpy")
    av, bv = dask.compute(a, b, scheduler="threads")
    _close(av.nngp, bv.nngp)
    _close(av.ntk, bv.ntk)


def test_kernel_errors():
    net = _net()
    Xd = da.ones((10, 3), chunks=(5, 3))
    with pytest.raises(InputError, match="2-D"):
        net.kernel(da.ones((10,), chunks=5))
    with pytest.raises(InputError, match="differ"):
        net.kernel(Xd, da.ones((4, 2), chunks=(2, 2)))
    with pytest.raises(InputError, match="real numbers"):
        net.kernel(da.ones((4, 2), dtype=bool, chunks=2))
    with pytest.raises(ParameterError, match="get"):
        net.kernel(Xd, get="both")
    with pytest.raises(ParameterError, match="out="):
        net.kernel(Xd, backend="numba", out=(None, None))
    X = np.ones((10, 3))
    X[7, 1] = np.nan
    k = net.kernel(da.from_array(X, chunks=(5, 3)), backend="numpy")  # lazy: nothing checked yet
    with pytest.raises(InputError, match=r"X contains NaN or Inf \(first at row 7, column 1\)"):
        k.ntk.compute(scheduler="threads")


def test_kernel_threaded_images_convolutional_network():
    """NHWC image batches tile along the images; the spatial recursion runs inside each tile."""
    conv = pytest.importorskip("dualcalc.conv")
    net = dc.serial(conv.Conv(1.5, 0.1, (3, 3)), "relu", conv.Conv(1.5, 0.1, (3, 3)), "relu",
                    conv.GlobalAvgPool(), dc.Dense(1.0))
    X = np.random.default_rng(5).standard_normal((9, 5, 5, 2))
    ref = net.kernel(X, backend="numpy")
    k = net.kernel(da.from_array(X, chunks=(4, 5, 2, 2)), backend="numpy")
    assert k.ntk.shape == (9, 9)
    nngp, ntk = dask.compute(k.nngp, k.ntk, scheduler="threads")
    _close(nngp, ref.nngp)
    _close(ntk, ref.ntk)


# -- kernels on the cluster ----------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_kernel_cluster_matches_in_memory(client, data, backend):
    X, Y = data
    net = _net("relu", depth=3)
    ref = net.kernel(X, backend="numpy")
    ref_xy = net.kernel(X, Y, backend="numpy")
    Xd = da.from_array(X, chunks=(110, 6))
    k = net.kernel(Xd, backend=backend)
    kxy = net.kernel(Xd, da.from_array(Y, chunks=(60, 6)), backend=backend)
    nngp, ntk, nngp_xy, ntk_xy = client.compute([k.nngp, k.ntk, kxy.nngp, kxy.ntk], sync=True)
    _close(nngp, ref.nngp)
    _close(ntk, ref.ntk)
    _close(nngp_xy, ref_xy.nngp)
    _close(ntk_xy, ref_xy.ntk)
    # The network went to each worker once per computation; tasks share the held copy.
    stats = client.run(dd.worker_stats)
    assert sum(s["tiles"] for s in stats.values()) >= 10 + 8
    assert all(s["objects_held"] >= 1 for s in stats.values() if s["tiles"])


@pytest.mark.skipif(not HAS_NUMBA, reason="the generated numba backend is not available")
def test_generated_kernels_compile_once_per_worker(client, data):
    X, _ = data
    net = _net("gelu")
    Xd = da.from_array(X, chunks=(100, 6))
    first = client.compute(net.kernel(Xd, backend="numba").ntk, sync=True)
    held = client.run(dd.worker_stats)
    again = client.compute(net.kernel(Xd + 0.0, backend="numba").ntk, sync=True)
    after = client.run(dd.worker_stats)
    np.testing.assert_allclose(again, first, rtol=1e-13, atol=0)
    token = dd.content_token(net)
    assert all(token in client.run(lambda: list(dd._LOCAL), workers=[w])[w] for w in after if after[w]["tiles"])
    # The second computation was served by the copy (and its compiled kernels) each worker held.
    for w, s in after.items():
        if s["tiles"] > held[w]["tiles"]:
            assert s["objects_held"] == held[w]["objects_held"]
            assert s["objects_reused"] > held[w]["objects_reused"]
            # ... and the generated module compiled for the first computation: no new import.
            assert s["backend_cache"]["imported"] == held[w]["backend_cache"]["imported"]
            assert s["backend_cache"]["memory_hits"] > held[w]["backend_cache"]["memory_hits"]


# -- sketches and ridge --------------------------------------------------------------------------
@needs_sketch
@pytest.mark.parametrize("kind,bias", [("ntk", 0.0), ("nngp", 0.0), ("ntk", 0.1), ("nngp", 0.1)])
def test_sketch_transform_bit_for_bit(client, data, kind, bias):
    """ReLU networks (homogeneous method without biases, layer-wise with): row-wise features."""
    X, _ = data
    net = dc.serial(dc.Dense(1.5, bias), "relu", dc.Dense(1.5, bias), "relu", dc.Dense(1.5, bias))
    sk = KernelSketch(net, n_components=96, kernel=kind, degree=4, random_state=3).fit(X)
    ref = sk.transform(X)
    Z1 = client.compute(dd.sketch_transform(sk, da.from_array(X, chunks=(100, 6))), sync=True)
    Z2 = client.compute(dd.sketch_transform(sk, da.from_array(X, chunks=(37, 3))), sync=True)
    Z3 = dd.sketch_transform(sk, da.from_array(X, chunks=(215, 6))).compute(scheduler="threads")
    for Z in (Z1, Z2, Z3):
        assert Z.dtype == ref.dtype
        np.testing.assert_array_equal(Z, ref)
    # A sketch refitted with the same random_state is the same sketch.
    again = KernelSketch(net, n_components=96, kernel=kind, degree=4, random_state=3).fit(X)
    np.testing.assert_array_equal(client.compute(dd.sketch_transform(again, da.from_array(X, chunks=100)),
                                                 sync=True), ref)


@needs_sketch
def test_sketch_transform_smooth_activation(client, data):
    """GELU: coefficient tables come from one fixed grid per activation, not from the batch,
    so blocks on the cluster agree with the whole bit for bit."""
    X, _ = data
    X = np.concatenate([X, 1.3 * X])  # many distinct variances
    net = dc.serial(dc.Dense(1.5, 0.1), "gelu", dc.Dense(1.5, 0.1))
    sk = KernelSketch(net, n_components=64, kernel="nngp", degree=4, random_state=0).fit(X)
    ref = sk.transform(X)
    Z = client.compute(dd.sketch_transform(sk, da.from_array(X, chunks=(200, 6))), sync=True)
    np.testing.assert_array_equal(Z, ref)


@needs_sketch
def test_sketch_transform_images():
    """Convolutional sketches take NHWC blocks the same way (threaded scheduler)."""
    conv = pytest.importorskip("dualcalc.conv")
    net = dc.serial(conv.Conv(1.5, 0.1, (3, 3)), "relu", conv.GlobalAvgPool(), dc.Dense(1.0))
    X = np.random.default_rng(2).standard_normal((12, 5, 5, 2))
    sk = KernelSketch(net, n_components=32, kernel="ntk", random_state=0).fit(X)
    Z = dd.sketch_transform(sk, da.from_array(X, chunks=(5, 5, 2, 2)))
    assert Z.chunks == ((5, 5, 2), (32,))
    np.testing.assert_array_equal(Z.compute(scheduler="threads"), sk.transform(X))


@needs_sketch
def test_sketch_transform_method_dispatches_dask(data):
    X, _ = data
    sk = KernelSketch(_net("relu"), n_components=32, kernel="nngp", random_state=0).fit(X)
    Zd = sk.transform(da.from_array(X, chunks=(100, 6)))
    if not isinstance(Zd, da.Array):
        pytest.skip("KernelSketch.transform does not dispatch Dask arrays yet")
    np.testing.assert_array_equal(Zd.compute(scheduler="threads"), sk.transform(X))


@needs_sketch
def test_sketched_ridge_dask_matches_in_memory_and_sklearn(client, data):
    from sklearn.linear_model import Ridge

    X, _ = data
    y = np.sin(X[:, 0]) + 0.1 * X[:, 1] ** 2
    net = _net("relu")
    sk = KernelSketch(net, n_components=64, kernel="ntk", degree=4, random_state=1).fit(X)
    Z = sk.transform(X)
    for intercept in (True, False):
        skl = Ridge(alpha=0.5, fit_intercept=intercept, solver="cholesky").fit(Z, y)
        mem = dd.SketchedRidge(sk, alpha=0.5, fit_intercept=intercept, slab_rows=64).fit(X, y)
        dist = dd.SketchedRidge(sk, alpha=0.5, fit_intercept=intercept).fit(
            da.from_array(X, chunks=(90, 6)), da.from_array(y, chunks=90))
        for model in (mem, dist):
            np.testing.assert_allclose(model.coef_, skl.coef_, rtol=1e-7, atol=1e-9)
            np.testing.assert_allclose(model.intercept_, skl.intercept_, rtol=1e-7, atol=1e-9)
        pred = dist.predict(da.from_array(X, chunks=(77, 6)))
        assert isinstance(pred, da.Array)
        np.testing.assert_allclose(client.compute(pred, sync=True), skl.predict(Z), rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(mem.predict(X), skl.predict(Z), rtol=1e-7, atol=1e-9)
    assert dist.n_samples_seen_ == len(X)
    # Several targets at once; y in memory with X on Dask.
    Y2 = np.stack([y, np.cos(X[:, 2])], axis=1)
    multi = dd.SketchedRidge(sk, alpha=0.5).fit(da.from_array(X, chunks=(90, 6)), Y2)
    ref2 = Ridge(alpha=0.5, solver="cholesky").fit(Z, Y2)
    np.testing.assert_allclose(multi.coef_, ref2.coef_.T, rtol=1e-7, atol=1e-9)
    assert multi.predict(da.from_array(X, chunks=(77, 6))).compute().shape == (len(X), 2)
    # Gram blocks ran on the workers, not here.
    assert sum(s["gram_blocks"] for s in client.run(dd.worker_stats).values()) >= 5
    with pytest.raises(InputError, match="y must have shape"):
        dd.SketchedRidge(sk).fit(da.from_array(X, chunks=90), y[:-1])


# -- fault tolerance (last: it restarts a worker) ------------------------------------------------
def _kernel_task_counts(dask_scheduler=None):
    out = {}
    for addr, ws in dask_scheduler.workers.items():
        held = sum(1 for ts in ws.has_what if "dualcalc-kernel" in str(ts.key))
        running = sum(1 for ts in ws.processing if "dualcalc-kernel" in str(ts.key))
        out[addr] = (held, running)
    return out


def test_worker_killed_mid_computation(client):
    rng = np.random.default_rng(11)
    X = rng.standard_normal((1600, 10))
    net = _net("relu", depth=3)
    ref = net.kernel(X, backend="numpy")
    k = net.kernel(da.from_array(X, chunks=(400, 10)), backend="numpy")  # 10 tiles, 6 transposes
    pids = client.run(os.getpid)  # worker address → process id (the cluster is this module's own)
    fut = client.compute(k.ntk)
    victim = None
    deadline = time.monotonic() + 60
    while victim is None and time.monotonic() < deadline and not fut.done():
        for addr, (held, running) in client.run_on_scheduler(_kernel_task_counts).items():
            if held >= 1 and running >= 1:  # finished tiles to lose and one in flight
                victim = addr
                break
        else:
            time.sleep(0.01)
    assert victim is not None, "no worker was ever holding and running kernel tiles"
    os.kill(pids[victim], signal.SIGKILL)  # the worker process dies mid-computation
    result = fut.result(timeout=120)
    _close(result, ref.ntk)
    np.testing.assert_array_equal(result, result.T)
    # The scheduler noticed the loss (the nanny restarts the process under a new address;
    # the test does not wait for it: this is the module's last use of the cluster).
    assert victim not in set(client.scheduler_info()["workers"])
