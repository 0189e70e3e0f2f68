"""CIFAR-10 reader (on small batch files the tests write) and the paper's preprocessing."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from dualcalc.data import Preprocessor, load_cifar10, preprocess, read_cifar_batch
from dualcalc.errors import InputError


def _batch(rng, n, label_offset=0):
    imgs = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    # the file layout: each row holds the red plane, then green, then blue, each row-major
    data = imgs.transpose(0, 3, 1, 2).reshape(n, 3072)
    labels = [int((i + label_offset) % 10) for i in range(n)]
    return imgs, labels, {b"batch_label": b"test batch", b"labels": labels, b"data": data,
                          b"filenames": [f"img{i}.png".encode() for i in range(n)]}


@pytest.fixture
def cifar_folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    truth = {}
    for i in range(1, 6):
        imgs, labels, d = _batch(rng, 7, i)
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(d, protocol=2))
        truth[f"data_batch_{i}"] = (imgs, labels)
    imgs, labels, d = _batch(rng, 5)
    (folder / "test_batch").write_bytes(pickle.dumps(d, protocol=2))
    truth["test_batch"] = (imgs, labels)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"]}, protocol=2))
    return folder, truth


def test_reader_layout_and_labels(cifar_folder):
    folder, truth = cifar_folder
    Xtr, ytr, Xte, yte = load_cifar10(folder)
    assert Xtr.shape == (35, 32, 32, 3) and Xtr.dtype == np.uint8
    assert Xte.shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(Xtr[:7], truth["data_batch_1"][0])  # NHWC, channels in place
    np.testing.assert_array_equal(Xtr[28:], truth["data_batch_5"][0])
    np.testing.assert_array_equal(ytr[:7], truth["data_batch_1"][1])
    np.testing.assert_array_equal(Xte, truth["test_batch"][0])
    # the parent folder works too, as do subsets and a float dtype
    Xtr2, ytr2, Xte2, _ = load_cifar10(folder.parent, n_train=9, n_test=2, dtype=np.float64)
    assert Xtr2.shape == (9, 32, 32, 3) and Xtr2.dtype == np.float64 and Xte2.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(Xtr2, Xtr[:9])


def test_other_pickle_protocols(tmp_path):
    rng = np.random.default_rng(1)
    imgs, labels, d = _batch(rng, 3)
    for proto in (3, 4, 5):
        p = tmp_path / f"b{proto}"
        p.write_bytes(pickle.dumps({k.decode(): v for k, v in d.items()}, protocol=proto))  # str keys too
        x, y = read_cifar_batch(p)
        np.testing.assert_array_equal(x, imgs)
        np.testing.assert_array_equal(y, labels)


def test_missing_and_malformed(tmp_path, cifar_folder):
    with pytest.raises(InputError, match="does not exist.*never downloads"):
        load_cifar10(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="missing data_batch_1"):
        load_cifar10(empty)
    folder, _ = cifar_folder
    (folder / "data_batch_3").write_bytes(b"this is not a pickle")
    with pytest.raises(InputError, match="data_batch_3.*not a CIFAR-10 python batch"):
        load_cifar10(folder)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(InputError, match=r"shape \(n, 3072\)"):
        load_cifar10(folder)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}))
    with pytest.raises(InputError, match="labels must lie in 0..9"):
        load_cifar10(folder)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}))
    with pytest.raises(InputError, match="'data' and 'labels' are required"):
        load_cifar10(folder)
    with pytest.raises(InputError, match="holds only"):
        load_cifar10(folder, n_train=0, n_test=6)


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.path}",))


def test_crafted_pickle_is_refused_not_run(tmp_path):
    marker = tmp_path / "ran"
    p = tmp_path / "evil_batch"
    p.write_bytes(pickle.dumps({b"data": _Evil(marker), b"labels": [0]}, protocol=2))
    with pytest.raises(InputError, match="refusing to load"):
        read_cifar_batch(p)
    assert not marker.exists()


def test_preprocessing_steps():
    rng = np.random.default_rng(2)
    # correlated, offset images: 4x4x3 so that the ZCA covariance is small
    X = rng.normal(size=(400, 4, 4, 3)) @ np.array([[1.0, 0.5, 0.2], [0.0, 1.0, 0.3], [0.0, 0.0, 1.0]]) * 20 + 100
    Y = rng.normal(size=(5, 4, 4, 3)) * 20 + 100
    # 1 and 2 only
    p = Preprocessor(zca=False).fit(X)
    Z = p.transform(X).reshape(400, -1)
    np.testing.assert_allclose(Z.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1, rtol=1e-12)
    std_only = Preprocessor(zca=False, layer_norm=False).fit_transform(X)
    np.testing.assert_allclose(std_only.mean(axis=(0, 1, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(std_only.std(axis=(0, 1, 2)), 1, rtol=1e-12)
    # ZCA with a tiny regulariser whitens the training data: covariance ≈ identity on the
    # span of the data (the per-image centring removes one direction)
    W = Preprocessor(zca=True, zca_reg=1e-8).fit_transform(X).reshape(400, -1)
    C = W.T @ W / 400
    ev = np.sort(np.linalg.eigvalsh(C))
    np.testing.assert_allclose(ev[1:], 1, atol=1e-5)
    assert ev[0] < 1e-5
    # symmetric (ZCA, not PCA): the whitening matrix is symmetric positive definite
    pz = Preprocessor(zca=True, zca_reg=0.1).fit(X)
    np.testing.assert_allclose(pz.whiten_, pz.whiten_.T, atol=1e-12)
    assert np.linalg.eigvalsh(pz.whiten_).min() > 0
    # regularisation relative to the mean eigenvalue: larger reg, weaker whitening
    Wr = pz.transform(X).reshape(400, -1)
    assert np.linalg.eigvalsh(Wr.T @ Wr / 400).max() < 1
    # the same transform for other images, fitted statistics only
    a, b = preprocess(X, Y, zca_reg=0.1)
    np.testing.assert_allclose(b, pz.transform(Y))
    np.testing.assert_allclose(a, pz.transform(X))


def test_rank_control_and_paper_compat():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(10, 4, 4, 3))  # fewer images (10) than dimensions (48)
    p = Preprocessor(zca=True, zca_reg=1e-3).fit(X)
    ev = np.linalg.eigvalsh(p.whiten_)
    # 10 rescaled directions, 38 left alone (eigenvalue 1 of the whitening matrix)
    assert np.sum(np.isclose(ev, 1.0, atol=1e-9)) >= 38
    q = Preprocessor(zca=True, zca_reg=1e-3, paper_compat=True).fit(X)
    assert q.transform(X).shape == X.shape and np.all(np.isfinite(q.transform(X)))
    with pytest.raises(InputError):
        Preprocessor().fit(X[:, :, :, 0])
    with pytest.raises(InputError):
        p.transform(rng.normal(size=(2, 5, 5, 3)))
    with pytest.raises(InputError):
        Preprocessor(zca_reg=-1)
