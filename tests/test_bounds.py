"""Impossible requests are refused before any work, with dualcalc's own errors (dualcalc/bounds.py)."""
import numpy as np
import pytest

import dualcalc as dc
from dualcalc import bounds
from dualcalc.errors import (
    BackendError,
    DualcalcError,
    OutOfMemoryError,
    ParameterError,
)

X = np.random.default_rng(0).normal(size=(6, 3))
NET = dc.serial(dc.Dense(1.5, 0.1), "relu", dc.Dense(1.5, 0.1))


@pytest.mark.parametrize("make", [
    lambda v: dc.Dense(v, 0.1), lambda v: dc.Dense(1.0, v),
    lambda v: dc.Conv(v, 0.1, (3, 3)), lambda v: dc.Conv(1.0, v, (3, 3)),
])
def test_weight_and_bias_whose_square_overflows_are_refused(make):
    with pytest.raises(ParameterError, match="overflows float64"):
        make(1e160)
    make(1e150)  # its square, 1e300, is still a float64: accepted


def test_the_bound_is_the_square_root_of_the_largest_float():
    assert np.isfinite(np.float64(bounds.MAX_STD) ** 2)
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.float64(np.nextafter(bounds.MAX_STD, np.inf)) ** 2 * 1.0000001)


def test_activation_parameter_that_overflows_its_dual_is_refused():
    with pytest.raises(ParameterError, match="unit variance"):
        dc.activation("leaky_relu", alpha=1e200).nngp(1.0, 1.0, 0.5)
    assert np.isfinite(dc.activation("leaky_relu", alpha=1e10).nngp(1.0, 1.0, 0.5))


def test_kernel_says_how_much_memory_it_would_need(monkeypatch):
    monkeypatch.setattr(bounds, "available_memory", lambda: 10_000)
    with pytest.raises(OutOfMemoryError, match=r"would need .*KiB.*memory-mapped") as err:
        NET.kernel(np.ones((40, 3)))  # 2 outputs × 40 × 40 × 8 B = 25.6 kB > 10 kB
    assert isinstance(err.value, MemoryError) and isinstance(err.value, DualcalcError)
    # preallocated outputs need nothing more
    K, T = np.empty((40, 40)), np.empty((40, 40))
    NET.kernel(np.ones((40, 3)), out=(K, T), backend="numba")
    # one requested output counts once
    with pytest.raises(OutOfMemoryError, match="1 output"):
        NET.kernel(np.ones((40, 3)), get="ntk", backend="numba")


def test_sketch_features_and_projections_are_checked(monkeypatch):
    with pytest.raises(OutOfMemoryError, match="n_components"):
        dc.KernelSketch(NET, n_components=10**15, random_state=0).fit(X)
    sk = dc.KernelSketch(NET, n_components=64, random_state=0).fit(X)
    monkeypatch.setattr(bounds, "available_memory", lambda: 100)
    with pytest.raises(OutOfMemoryError, match="features"):
        sk.transform(X)


def test_sketch_on_cuda_without_a_gpu_is_a_backend_error():
    from codegen.cuda_target import gpu_available

    if gpu_available():  # pragma: no cover - GPU machines
        pytest.skip("a GPU is visible")
    with pytest.raises(BackendError, match="GPU"):
        dc.KernelSketch(NET, n_components=64, backend="cuda").fit(X)
