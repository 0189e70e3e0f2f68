r"""CIFAR-10 from the standard python-pickle batch folder, and the preprocessing of the paper's code.

The reader never downloads anything: it reads the folder the user gives — the
``cifar-10-batches-py`` folder of https://www.cs.toronto.edu/~kriz/cifar.html, holding
``data_batch_1`` … ``data_batch_5`` and ``test_batch`` (and ``batches.meta``) — and says
exactly what is wrong when the folder or a file is missing or malformed.

The batch files are Python pickles.  A pickle can run code when loaded, so they are read by
a restricted unpickler that only rebuilds plain containers, numbers, strings and NumPy
arrays; anything else (a crafted file) is refused with an error, never executed.

Preprocessing (Han et al. 2022's ``myrtle5_cntk_regression.py``, after Lee et al. 2020 and
Shankar et al. 2020), all statistics from the training images:

1. per-channel standardisation: (x − mean_c) / std_c over all training pixels;
2. per-image centring and normalising ("layer norm"): each flattened image minus its mean,
   divided by its Euclidean norm;
3. optional ZCA whitening with regularisation: W = U (S + λ I)^{-1/2} Uᵀ from the training
   covariance C = XᵀX/n = U S Uᵀ, λ = zca_reg · tr(C)/d (or zca_reg itself with
   ``zca_reg_absolute=True``); with fewer images than dimensions the directions beyond the
   n-th are left unscaled (the paper code's "rank control").

The paper's code fits the whitening on the raw images after step 2 only (not after step 1),
then applies steps 1–3 to every image; ``paper_compat=True`` reproduces that, the default
fits it on exactly the data it is applied to.
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = ["load_cifar10", "read_cifar_batch", "Preprocessor", "preprocess", "CIFAR10_CLASSES"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
_IMAGE_BYTES = 32 * 32 * 3

# Globals a CIFAR batch pickle may name: NumPy's array rebuilding (NumPy 1 and 2 spellings)
# and the codec Python 3 uses for bytes in protocol-2 pickles.  Nothing else is rebuilt.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR-10 batch holds only arrays, "
                                     "lists, numbers and strings")


def _safe_load(raw: bytes):
    return _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()


def _key(d: dict, name: str):
    for k in (name, name.encode()):
        if k in d:
            return d[k]
    return None


def read_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One batch file → (images (n, 32, 32, 3) uint8 NHWC, labels (n,) int64)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"CIFAR-10 batch file {str(path)!r} does not exist")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read CIFAR-10 batch file {str(path)!r}: {e}") from e
    try:
        d = _safe_load(raw)
    except Exception as e:  # UnpicklingError, EOFError, ValueError, … on a damaged or foreign file
        raise InputError(f"{str(path)!r} is not a CIFAR-10 python batch file ({type(e).__name__}: {e})") from e
    if not isinstance(d, dict):
        raise InputError(f"{str(path)!r} is not a CIFAR-10 batch: expected a dict, found {type(d).__name__}")
    data, labels = _key(d, "data"), _key(d, "labels")
    if data is None or labels is None:
        raise InputError(f"{str(path)!r} is not a CIFAR-10 batch: the keys 'data' and 'labels' are required, "
                         f"found {sorted(str(k) for k in d)}")
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _IMAGE_BYTES:
        raise InputError(f"{str(path)!r}: 'data' must be a uint8 array of shape (n, 3072), "
                         f"got {data.dtype} {data.shape}")
    try:
        labels = np.asarray(labels, dtype=np.int64).ravel()
    except (TypeError, ValueError) as e:
        raise InputError(f"{str(path)!r}: 'labels' must be integers ({e})") from e
    if labels.shape[0] != data.shape[0]:
        raise InputError(f"{str(path)!r}: {data.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise InputError(f"{str(path)!r}: labels must lie in 0..9, found {labels.min()}..{labels.max()}")
    # rows are channel planes (1024 red, 1024 green, 1024 blue), each row-major 32×32
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def load_cifar10(folder: str | os.PathLike, *, n_train: int | None = None, n_test: int | None = None,
                 dtype=None):
    """CIFAR-10 from the python batch folder: (X_train, y_train, X_test, y_test).

    Images are NHWC (n, 32, 32, 3), uint8 unless ``dtype`` is given (e.g. np.float64);
    labels int64 in 0..9.  ``n_train`` / ``n_test``: keep only the first images (only the
    batch files needed are read).  Never downloads: a missing or incomplete folder is an
    :class:`~dualcalc.errors.InputError` naming what is missing.
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise InputError(f"CIFAR-10 folder {str(folder)!r} does not exist (dualcalc never downloads data: "
                         "give the folder 'cifar-10-batches-py' of the python version of CIFAR-10)")
    if not folder.is_dir():
        raise InputError(f"{str(folder)!r} is not a folder; give the folder that holds data_batch_1 … test_batch")
    if (folder / "cifar-10-batches-py").is_dir() and not (folder / TRAIN_FILES[0]).exists():
        folder = folder / "cifar-10-batches-py"
    for name, n in (("n_train", n_train), ("n_test", n_test)):
        if n is not None and (not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0):
            raise InputError(f"{name} must be a non-negative integer or None, got {n!r}")
    missing = [f for f in TRAIN_FILES + (TEST_FILE,) if not (folder / f).is_file()]
    if missing:
        raise InputError(f"{str(folder)!r} is not a complete CIFAR-10 python folder: missing {', '.join(missing)}")

    def read(files, limit):
        xs, ys, have = [], [], 0
        for f in files:
            if limit is not None and have >= limit:
                break
            x, y = read_cifar_batch(folder / f)
            xs.append(x)
            ys.append(y)
            have += len(y)
        x = np.concatenate(xs) if xs else np.zeros((0, 32, 32, 3), np.uint8)
        y = np.concatenate(ys) if ys else np.zeros(0, np.int64)
        if limit is not None:
            if limit > len(y):
                raise InputError(f"asked for {limit} images but {str(folder)!r} holds only {len(y)}")
            x, y = x[:limit], y[:limit]
        return (x if dtype is None else x.astype(dtype)), y

    X_train, y_train = read(TRAIN_FILES, n_train)
    X_test, y_test = read((TEST_FILE,), n_test)
    return X_train, y_train, X_test, y_test


class Preprocessor:
    """Fit on training images (NHWC), transform any images the same way (see module doc).

    ``zca``: apply ZCA whitening; ``zca_reg``: its regularisation (relative to the mean
    eigenvalue tr(C)/d unless ``zca_reg_absolute``); ``layer_norm``: per-image centring and
    normalising; ``paper_compat``: fit the whitening as the paper's code does.
    """

    def __init__(self, *, zca: bool = True, zca_reg: float = 0.1, zca_reg_absolute: bool = False,
                 layer_norm: bool = True, paper_compat: bool = False):
        if not (isinstance(zca_reg, (int, float)) and np.isfinite(zca_reg) and zca_reg >= 0):
            raise InputError(f"zca_reg must be a finite non-negative number, got {zca_reg!r}")
        self.zca, self.zca_reg, self.zca_reg_absolute = bool(zca), float(zca_reg), bool(zca_reg_absolute)
        self.layer_norm, self.paper_compat = bool(layer_norm), bool(paper_compat)

    @staticmethod
    def _images(X, name="X") -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 4:
            raise InputError(f"{name} must be NHWC images (4-D), got shape {X.shape}")
        if X.dtype.kind not in "fiu":
            raise InputError(f"{name} must hold real numbers, got dtype {X.dtype}")
        X = X.astype(np.float64)
        if not np.all(np.isfinite(X)):
            raise InputError(f"{name} contains NaN or Inf")
        return X

    @staticmethod
    def _normalise(F: np.ndarray) -> np.ndarray:
        F = F - F.mean(axis=1, keepdims=True)
        nrm = np.linalg.norm(F, axis=1, keepdims=True)
        return F / np.where(nrm > 0, nrm, 1.0)

    def fit(self, X_train):
        X = self._images(X_train, "X_train")
        if X.shape[0] < 2:
            raise InputError("preprocessing needs at least 2 training images")
        self.shape_ = X.shape[1:]
        self.mean_ = X.mean(axis=(0, 1, 2))
        std = X.std(axis=(0, 1, 2))
        self.std_ = np.where(std > 0, std, 1.0)
        self.whiten_ = None
        if self.zca:
            src = X if self.paper_compat else (X - self.mean_) / self.std_
            F = src.reshape(X.shape[0], -1)
            if self.layer_norm:
                F = self._normalise(F)
            n, d = F.shape
            cov = F.T @ F / n
            reg = self.zca_reg if self.zca_reg_absolute else self.zca_reg * np.trace(cov) / d
            U, S, _ = np.linalg.svd(cov + reg * np.eye(d), hermitian=True)
            with np.errstate(divide="ignore"):
                inv = np.where(S > 0, 1.0 / np.sqrt(np.where(S > 0, S, 1.0)), 0.0)
            if n < d:  # rank control: directions beyond the data's span are left as they are
                inv[n:] = 1.0
            self.whiten_ = (U * inv) @ U.T
        return self

    def transform(self, X):
        if not hasattr(self, "mean_"):
            raise InputError("Preprocessor.transform before fit")
        X = self._images(X)
        if X.shape[1:] != self.shape_:
            raise InputError(f"images of shape {X.shape[1:]} given to a preprocessor fitted on {self.shape_}")
        X = (X - self.mean_) / self.std_
        F = X.reshape(X.shape[0], -1)
        if self.layer_norm:
            F = self._normalise(F)
        if self.whiten_ is not None:
            F = F @ self.whiten_
        return F.reshape(X.shape)

    def fit_transform(self, X_train):
        return self.fit(X_train).transform(X_train)


def preprocess(X_train, *others, zca: bool = True, zca_reg: float = 0.1, **options):
    """Fit the preprocessing on X_train and apply it to X_train and every other array given:
    ``X_train, X_test = preprocess(X_train, X_test)`` (one array in: one array out)."""
    p = Preprocessor(zca=zca, zca_reg=zca_reg, **options).fit(X_train)
    out = [p.transform(X_train)] + [p.transform(X) for X in others]
    return out[0] if not others else tuple(out)
