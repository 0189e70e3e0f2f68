r"""Kernels, sketches and sketched ridge regression on Dask arrays.

Nothing here is needed for in-memory work; it is imported only when a Dask array
reaches :meth:`Network.kernel` (or :meth:`KernelSketch.transform`), or by hand::

    import dask.array as da
    from dask.distributed import Client, LocalCluster      # optional: no Client = threads
    X = da.from_array(X_np, chunks=(5_000, -1))            # rows chunked, features in one chunk
    k = net.kernel(X)                                      # Kernel(nngp=dask array, ntk=dask array)
    K = k.ntk.compute()                                    # or dask.compute(k.nngp, k.ntk)

How it works (docs/dask.md has the whole story):

* **Kernels.** Every layer of the recursion only needs a pair's covariance and each
  point's *own* variance, so the tile K(X_a, Y_b) computed by ``net.kernel(X_a, Y_b)``
  is exactly the (a, b) block of the whole matrix.  The result is a lazy Dask array
  of tiles (row-chunk of X) × (row-chunk of Y); each tile runs once, computes NNGP and
  NTK together (a stacked (2, a, b) block) and ``Kernel.nngp`` / ``Kernel.ntk`` are
  slices of it.  With ``Y=None`` only the tiles on and above the diagonal run; those
  below are their transposes, so the result is exactly symmetric.
* **Sketches.** :func:`sketch_transform` maps the *fitted* sketch over the row blocks;
  a sketch's features of a row depend on that row and the fitted random state only, so
  the result does not depend on chunking or on the number of workers.
* **Ridge.** :class:`SketchedRidge` accumulates Zᵀ·Z and Zᵀ·y (and the column sums
  for the intercept) block by block as one Dask reduction, solves the (m × m) system on
  the client, and predicts block-wise.
* **Schedulers.** Everything is a lazy Dask graph and runs on whatever scheduler is
  active: the threaded default, or a ``dask.distributed`` cluster when a ``Client``
  exists.  The network (or sketch) is one key of the graph, shipped once per worker;
  each worker keeps one copy per network content (:func:`local_object`), so generated
  kernels compiled in a worker are reused by every later tile and computation there.
"""
from __future__ import annotations

import hashlib
import pickle
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator

try:
    import dask
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("dualcalc.distributed needs Dask: pip install 'dualcalc[dask]' "
                      "(dask[array] and distributed)") from exc

from .errors import InputError, ParameterError

__all__ = ["dask_kernel", "sketch_transform", "SketchedRidge", "ridge_statistics", "ridge_solve",
           "sketch_predict", "gram_block", "is_dask_array", "local_object", "worker_stats", "content_token"]

#: rows of one slab when a sketch block is featurized inside a task (bounds a task's memory).
DEFAULT_SLAB_ROWS = 8192


# -- helpers ----------------------------------------------------------------------------------
def is_dask_array(a) -> bool:
    """True for Dask collections (without importing anything for other inputs)."""
    return a is not None and hasattr(a, "__dask_graph__")


def content_token(obj) -> str:
    """A content hash of ``obj``; a random token when it does not pickle.

    The hash is taken of the pickle of a pickled-and-restored copy: pickle's byte stream
    depends on which equal strings happen to be the same object, and one round trip
    makes that canonical.  Equal networks get the same token, so a worker reuses the copy
    (and the compiled kernels) it already holds; different contents never share a token.
    """
    try:
        data = pickle.dumps(pickle.loads(pickle.dumps(obj)))
    except Exception:  # noqa: BLE001 - any pickling failure: try cloudpickle, then give up
        try:
            data = _cloudpickle_dumps(obj)
        except Exception:  # noqa: BLE001
            return uuid.uuid4().hex
    return hashlib.sha256(data).hexdigest()[:32]


def _cloudpickle_dumps(obj):
    import cloudpickle

    return cloudpickle.dumps(obj)


_LOCAL_LOCK = threading.Lock()
_LOCAL: OrderedDict[str, object] = OrderedDict()
_LOCAL_MAX = 16
_STATS = {"tiles": 0, "sketch_blocks": 0, "gram_blocks": 0, "predict_blocks": 0,
          "objects_received": 0, "objects_reused": 0}


def local_object(token: str, obj):
    """This process's canonical copy of ``obj`` (first one seen for ``token``).

    A worker deserializes the network once per computation; handing every task the same
    instance keeps per-instance caches (compiled kernels, derived duals) warm across
    tiles and across computations.  At most 16 objects are kept (least recently used out).
    """
    with _LOCAL_LOCK:
        have = _LOCAL.get(token)
        if have is not None:
            _LOCAL.move_to_end(token)
            if have is not obj:
                _STATS["objects_reused"] += 1
            return have
        _LOCAL[token] = obj
        _STATS["objects_received"] += 1
        while len(_LOCAL) > _LOCAL_MAX:
            _LOCAL.popitem(last=False)
        return obj


def _count(key: str) -> None:
    with _LOCAL_LOCK:
        _STATS[key] += 1


def worker_stats() -> dict:
    """Counters of this process: tiles, sketch/gram/predict blocks run, objects received
    and reused.  On a cluster: ``client.run(dualcalc.distributed.worker_stats)``."""
    with _LOCAL_LOCK:
        out = dict(_STATS)
        out["objects_held"] = len(_LOCAL)
    try:  # the generated-kernel cache of this process, where the backends expose one
        from . import backends

        info = getattr(backends, "cache_info", None)
        if callable(info):
            out["backend_cache"] = info()
    except Exception:  # noqa: BLE001 - statistics must never fail
        pass
    return out


def _check_rows(A, name: str, ndims=(2,)):
    """Eager checks a Dask array allows without computing: shape, real dtype, non-empty."""
    if A.ndim not in ndims:
        want = "2-D (n_samples, n_features)" if ndims == (2,) else \
            "2-D (n_samples, n_features) or 4-D images (n, height, width, channels)"
        raise InputError(f"{name} must be {want}, got shape {A.shape}")
    if A.dtype.kind not in "fiu":
        raise InputError(f"{name} must hold real numbers, got dtype {A.dtype}")
    if any(s == 0 for s in A.shape):
        raise InputError(f"{name} is empty (shape {A.shape})")
    if any(s != s for s in A.shape[1:]):  # NaN: unknown sizes off the row axis
        raise InputError(f"{name} has unknown sizes on axes other than the rows; call {name}.compute_chunk_sizes()")


def _as_dask(A, name: str, row_chunks="auto", ndims=(2,)):
    """A Dask array chunked along the rows only (every other axis in one chunk, rechunked
    when needed).  In-memory input is wrapped with ``row_chunks`` rows per block."""
    if A is None:
        return None
    if not is_dask_array(A):
        if hasattr(A, "toarray") and not isinstance(A, np.ndarray):
            raise InputError(f"{name} is a sparse matrix; use a dense array (or densify each block)")
        A = np.asarray(A)
        _check_rows(A, name, ndims)
        A = da.from_array(A, chunks=(row_chunks,) + (-1,) * (A.ndim - 1))
    if not isinstance(A, da.Array):
        raise InputError(f"{name} is a Dask collection but not a dask.array.Array "
                         f"({type(A).__name__}); use .to_dask_array(lengths=True)")
    _check_rows(A, name, ndims)
    if any(n != 1 for n in A.numblocks[1:]):
        A = A.rechunk({ax: -1 for ax in range(1, A.ndim)})
    return A


def _row_ranges(chunks: tuple) -> list:
    """(start, stop) of every row block, or None where chunk sizes are unknown."""
    out, start = [], 0
    for c in chunks:
        if c != c or start is None:  # NaN: unknown size
            out.append(None)
            start = None
        else:
            out.append((start, start + int(c)))
            start += int(c)
    return out


# -- exact kernels ---------------------------------------------------------------------------
def _check_finite(A, name: str, rows) -> None:
    """NaN/Inf in a row block, reported with the row number in the whole array."""
    if A is None or A.dtype.kind != "f":
        return
    bad = ~np.isfinite(A)
    if bad.any():
        first = np.argwhere(bad)[0]
        where = f"row {first[0] + rows[0]}" if rows else f"row {first[0]} of a row block of unknown offset"
        rest = ", ".join(str(int(v)) for v in first[1:])
        raise InputError(f"{name} contains NaN or Inf (first at {where}, {'column' if A.ndim == 2 else 'index'} "
                         f"{rest})")


def _kernel_tile(token, net, x, y, get, backend, dtype, options, rows, cols, y_name):
    """One tile: K(X_rows, Y_cols) for the names in ``get``, stacked (len(get), a, b)."""
    net = local_object(token, net)
    _check_finite(x, "X", rows)
    _check_finite(y, y_name, cols)
    k = net.kernel(x, y, get=get, backend=backend, dtype=dtype, **options)
    _count("tiles")
    return np.stack([np.asarray(getattr(k, g)) for g in get])


def _transpose_tile(tile):
    return tile.transpose(0, 2, 1)


def dask_kernel(net, X, Y=None, *, get: Sequence[str] | str = ("nngp", "ntk"), backend: str = "auto",
                dtype=np.float64, **options):
    """``net.kernel`` for Dask arrays: a lazy :class:`~dualcalc.network.Kernel` of Dask arrays.

    X (n1, d) and Y (n2, d) may be Dask or in-memory arrays (an in-memory one is wrapped
    with the other's row chunk size).  The tiles are (row-chunk of X) × (row-chunk of Y),
    so choose row chunks whose tile fits a worker: a tile holds len(get)·a·b numbers.
    Data errors (NaN/Inf) surface when the tile holding them is computed.
    """
    from .reference import Kernel

    get = (get,) if isinstance(get, str) else tuple(get)
    bad = set(get) - {"nngp", "ntk"}
    if bad or not get or len(set(get)) != len(get):
        raise ParameterError(f"get must name 'nngp' and/or 'ntk', got {get!r}")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise InputError(f"dtype must be float32 or float64, got {dtype}")
    if "out" in options:
        raise ParameterError("out= is not available with Dask input: the result is lazy; write it with "
                             "dask.array.store(k.ntk, target) or k.ntk.to_zarr(path)")
    if backend != "numpy" and not any(getattr(l, "is_layer", False) is True for l in getattr(net, "layers", ())):
        options = {"progress": False, **options}  # no progress bars from inside tasks, unless asked
    ref = X if is_dask_array(X) else Y
    rows = ref.chunks[0][0] if is_dask_array(ref) and ref.chunks[0] and ref.chunks[0][0] == ref.chunks[0][0] \
        else "auto"
    X = _as_dask(X, "X", rows, ndims=(2, 4))
    Y = _as_dask(Y, "Y", rows, ndims=(2, 4))
    if Y is not None and Y.shape[1:] != X.shape[1:]:
        what = "features" if X.ndim == 2 else "image shape (height, width, channels)"
        raise InputError(f"X and Y differ in {what}: {X.shape[1:]} vs {Y.shape[1:]}")
    symmetric = Y is None
    B = X if symmetric else Y

    token = content_token(net)
    net_key = "dualcalc-network-" + token
    name = "dualcalc-kernel-" + tokenize(token, X.name, None if symmetric else Y.name, get, backend,
                                         dtype.str, options)
    rx, ry = _row_ranges(X.chunks[0]), _row_ranges(B.chunks[0])
    dsk: dict = {net_key: net}
    zeros = (0,) * (X.ndim - 1)
    for i in range(X.numblocks[0]):
        for j in range(B.numblocks[0]):
            if symmetric and j < i:
                dsk[(name, 0, i, j)] = (_transpose_tile, (name, 0, j, i))
                continue
            y_ref = None if (symmetric and i == j) else (B.name, j) + zeros
            dsk[(name, 0, i, j)] = (_kernel_tile, token, net_key, (X.name, i) + zeros, y_ref, get, backend, dtype,
                                    dict(options), rx[i], ry[j], "X" if symmetric else "Y")
    deps = [X] if symmetric else [X, Y]
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=deps)
    out_dtype = dtype
    stacked = da.Array(graph, name, chunks=((len(get),), X.chunks[0], B.chunks[0]),
                       meta=np.empty((0, 0, 0), dtype=out_dtype))
    parts = {g: stacked[n] for n, g in enumerate(get)}
    return Kernel(parts.get("nngp"), parts.get("ntk"))


# -- sketches --------------------------------------------------------------------------------
def _n_features_out(sketch) -> int:
    for attr in ("n_components_", "n_components"):
        v = getattr(sketch, attr, None)
        if isinstance(v, int | np.integer):
            return int(v)
    raise ParameterError(f"cannot tell the number of output features of {sketch!r}")


def _check_fitted(sketch) -> None:
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(sketch)


def _sketch_block(token, sketch, x):
    z = local_object(token, sketch).transform(x)
    _count("sketch_blocks")
    return z


def sketch_transform(sketch, X):
    """Features of a *fitted* sketch for a Dask array X (n, d): a lazy (n, n_components) array.

    Every row block is transformed by the same fitted sketch (shipped once per worker, a
    single key of the graph).  A sketch whose features of a row depend on that row only
    (the random maps are fixed at fit) gives the in-memory ``sketch.transform(X)`` bit for
    bit, whatever the chunking and the number of workers; see docs/dask.md for the
    activations where the sketch's coefficient tables depend on the batch.
    """
    _check_fitted(sketch)
    X = _as_dask(X, "X", ndims=(2, 4))  # rows, or NHWC images for convolutional sketches
    m = _n_features_out(sketch)
    token = content_token(sketch)
    sk = dask.delayed(sketch, name="dualcalc-sketch-" + token, pure=True)
    out_dtype = np.float32 if X.dtype == np.float32 else np.float64  # KernelSketch's rule
    return da.blockwise(_sketch_block, "ij", token, None, sk, None, X, "i" + "klm"[:X.ndim - 1],
                        new_axes={"j": m}, concatenate=True, meta=np.empty((0, 0), dtype=out_dtype),
                        name="dualcalc-sketch-transform-" + tokenize(token, X.name))


# -- ridge regression on sketched features ---------------------------------------------------
def gram_block(sketch, x, y, slab: int = DEFAULT_SLAB_ROWS) -> np.ndarray:
    """One block's sufficient statistics of ridge regression on Z = sketch(x).

    Returns P of shape (m + 1, m + 1 + k) = [Z 1]ᵀ [Z 1 y] in float64: P[:m, :m] = ZᵀZ,
    P[:m, m] = Zᵀ1, P[m, m] = n, P[:m, m+1:] = Zᵀy, P[m, m+1:] = 1ᵀy.  Rows are featurized
    ``slab`` at a time, so a block needs O(slab·m + m²) memory.
    """
    m = _n_features_out(sketch)
    y = np.asarray(y, dtype=np.float64).reshape(len(x), -1)
    k = y.shape[1]
    P = np.zeros((m + 1, m + 1 + k))
    for s in range(0, len(x), slab):
        z = np.asarray(sketch.transform(x[s:s + slab]), dtype=np.float64)
        ys = y[s:s + slab]
        P[:m, :m] += z.T @ z
        P[:m, m] += z.sum(axis=0)
        P[m, m] += len(z)
        P[:m, m + 1:] += z.T @ ys
        P[m, m + 1:] += ys.sum(axis=0)
    return P


def _gram_task(token, sketch, x, y, slab):
    sketch = local_object(token, sketch)
    P = gram_block(sketch, x, y, slab)
    _count("gram_blocks")
    return P[None]


def _predict_rows(sketch, x, coef, intercept, slab: int) -> np.ndarray:
    out = np.empty((len(x),) + np.shape(coef)[1:])
    for s in range(0, len(x), slab):
        out[s:s + slab] = np.asarray(sketch.transform(x[s:s + slab]), dtype=np.float64) @ coef + intercept
    return out


def _predict_task(token, sketch, x, coef, intercept, slab):
    out = _predict_rows(local_object(token, sketch), x, coef, intercept, slab)
    _count("predict_blocks")
    return out


def _targets(y, n: int) -> None:
    if y.ndim not in (1, 2) or y.shape[0] != n:
        raise InputError(f"y must have shape (n,) or (n, k) with n = {n}, got {y.shape}")
    if y.dtype.kind not in "fiub":
        raise InputError(f"y must hold real numbers, got dtype {y.dtype}")


def ridge_statistics(sketch, X, y, *, slab_rows: int = DEFAULT_SLAB_ROWS) -> np.ndarray:
    """[Z 1]ᵀ[Z 1 y] over all rows of X, Z = sketch.transform(X), computed now (see :func:`gram_block`).

    Dask input: one task per row block featurizes its rows slab by slab and returns its
    (m + 1) × (m + 1 + k) partial sums; a Dask tree reduction adds them up, on whatever
    scheduler is active.  In-memory input: the same per-block code, in this process.
    """
    _check_fitted(sketch)
    slab = int(slab_rows)
    if slab < 1:
        raise ParameterError(f"slab_rows must be a positive number of rows, got {slab_rows!r}")
    if is_dask_array(X) or is_dask_array(y):
        X = _as_dask(X, "X")
        y = y if is_dask_array(y) else np.asarray(y)
        _targets(y, X.shape[0])
        if not is_dask_array(y):
            y = da.from_array(y, chunks=(X.chunks[0],) + y.shape[1:])
        y2 = (y if y.ndim == 2 else y[:, None]).rechunk({0: X.chunks[0], 1: -1})
        m, k = _n_features_out(sketch), y2.shape[1]
        token = content_token(sketch)
        sk = dask.delayed(sketch, name="dualcalc-sketch-" + token, pure=True)
        parts = da.blockwise(_gram_task, "ipq", token, None, sk, None, X, "ia", y2, "ib", slab, None,
                             new_axes={"p": m + 1, "q": m + 1 + k}, adjust_chunks={"i": 1},
                             concatenate=True, meta=np.empty((0, 0, 0)),
                             name="dualcalc-gram-" + tokenize(token, X.name, y2.name, slab))
        (P,) = dask.compute(parts.sum(axis=0))
        return P
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim != 2:
        raise InputError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    _targets(y, X.shape[0])
    return gram_block(sketch, X, y, slab)


def ridge_solve(P: np.ndarray, alpha: float, fit_intercept: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(coef (m, k), intercept (k,)) minimizing ‖y − Zw − b‖² + alpha‖w‖² from the statistics P.

    With an intercept the Gram matrix and Zᵀy are centred (ZᵀZ − n·μμᵀ, Zᵀy − n·μȳᵀ), as
    scikit-learn's Ridge centres the data.  Cholesky solve; least squares when singular.
    """
    import scipy.linalg

    if not (isinstance(alpha, int | float | np.floating) and np.isfinite(alpha) and alpha >= 0):
        raise ParameterError(f"alpha must be a finite non-negative number, got {alpha!r}")
    m = P.shape[0] - 1
    G, s, n, B, sy = P[:m, :m], P[:m, m], P[m, m], P[:m, m + 1:], P[m, m + 1:]
    if fit_intercept:
        mu, ybar = s / n, sy / n
        G = G - n * np.outer(mu, mu)
        B = B - n * np.outer(mu, ybar)
    A = G + float(alpha) * np.eye(m)
    try:
        coef = scipy.linalg.solve(A, B, assume_a="pos")
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
        coef = scipy.linalg.lstsq(A, B)[0]  # alpha = 0 with a rank-deficient Gram matrix
    intercept = (ybar - mu @ coef) if fit_intercept else np.zeros(B.shape[1])
    return coef, intercept


def sketch_predict(sketch, X, coef, intercept=0.0, *, slab_rows: int = DEFAULT_SLAB_ROWS):
    """sketch.transform(X) @ coef + intercept, row block by row block (lazy for Dask input)."""
    slab = int(slab_rows)
    coef = np.asarray(coef, dtype=np.float64)
    if not is_dask_array(X):
        return _predict_rows(sketch, np.asarray(X), coef, intercept, slab)
    X = _as_dask(X, "X")
    token = content_token(sketch)
    sk = dask.delayed(sketch, name="dualcalc-sketch-" + token, pure=True)
    name = "dualcalc-predict-" + tokenize(token, X.name, coef, intercept, slab)
    if coef.ndim == 1:
        return da.blockwise(_predict_task, "i", token, None, sk, None, X, "ia", coef, None, intercept, None,
                            slab, None, concatenate=True, meta=np.empty((0,)), name=name)
    return da.blockwise(_predict_task, "ij", token, None, sk, None, X, "ia", coef, None, intercept, None,
                        slab, None, new_axes={"j": coef.shape[1]}, concatenate=True, meta=np.empty((0, 0)),
                        name=name)


class SketchedRidge(BaseEstimator):
    """Ridge regression on sketched kernel features, in memory or over Dask arrays.

    Minimizes ‖y − Z·w − b‖² + alpha·‖w‖² with Z = sketch.transform(X) (b only with
    ``fit_intercept``), which approximates kernel ridge regression with the sketch's
    kernel.  For Dask input Zᵀ·Z and Zᵀ·y are accumulated block by block as one Dask
    reduction (Z is never stored: :func:`ridge_statistics`), the (m × m) system is solved
    on the client (:func:`ridge_solve`) and :meth:`predict` maps over the row blocks
    (:func:`sketch_predict`).  In-memory input runs the same per-block code in this process.

    ``sketch``: a fitted or unfitted :class:`dualcalc.KernelSketch`.  :meth:`fit` fits an
    unfitted one on X — for Dask X on the first row block only (its degree choice looks
    at a subsample anyway); fit it yourself to choose the sample.
    """

    def __init__(self, sketch, alpha: float = 1.0, *, fit_intercept: bool = True,
                 slab_rows: int = DEFAULT_SLAB_ROWS):
        self.sketch = sketch
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.slab_rows = slab_rows

    def _fitted_sketch(self, X):
        try:
            _check_fitted(self.sketch)
        except Exception:  # noqa: BLE001 - NotFittedError, or a transformer without fitted attributes
            first = X.blocks[0].compute() if is_dask_array(X) else X
            self.sketch.fit(first)
        return self.sketch

    def fit(self, X, y):
        """Fit on X (n, d) and y (n,) or (n, k), Dask or in memory."""
        if not is_dask_array(X):
            X = np.asarray(X)
        sketch = self._fitted_sketch(X)
        P = ridge_statistics(sketch, X, y, slab_rows=self.slab_rows)
        coef, intercept = ridge_solve(P, self.alpha, self.fit_intercept)
        one_d = np.ndim(y) == 1
        self.coef_ = coef[:, 0] if one_d else coef
        self.intercept_ = float(intercept[0]) if one_d else intercept
        self.n_features_in_ = int(X.shape[1])
        m = P.shape[0] - 1
        self.n_samples_seen_ = int(round(P[m, m]))
        return self

    def predict(self, X):
        """Predictions for X: a lazy Dask array for Dask input, else a NumPy array."""
        if not hasattr(self, "coef_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("SketchedRidge is not fitted yet; call fit(X, y) first")
        return sketch_predict(self.sketch, X, self.coef_, self.intercept_, slab_rows=self.slab_rows)

    def score(self, X, y) -> float:
        """R² of the predictions (computed now for Dask input)."""
        p = self.predict(X)
        if is_dask_array(p) or is_dask_array(y):
            y = y if is_dask_array(y) else da.from_array(np.asarray(y), chunks=p.chunks)
            ss_res, ss_tot = dask.compute(((y - p) ** 2).sum(), ((y - y.mean(axis=0)) ** 2).sum())
        else:
            y = np.asarray(y)
            ss_res, ss_tot = ((y - p) ** 2).sum(), ((y - y.mean(axis=0)) ** 2).sum()
        return float(1.0 - ss_res / ss_tot)
