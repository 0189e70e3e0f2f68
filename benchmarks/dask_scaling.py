"""Sketched kernel ridge regression on Dask: a local cluster against one process, in one run.

    python benchmarks/dask_scaling.py                        # n = 10⁶, d = 100, m = 2048, 2 workers
    python benchmarks/dask_scaling.py --n 100000 --workers 2 # a quick look
    python benchmarks/dask_scaling.py --scheduler tcp://host:8786   # an existing cluster instead

What is timed, for both set-ups, on the same data and the same fitted KernelSketch:

* fit   — sketch features of every row and Zᵀ·Z, Zᵀ·y accumulated block by block (Z is never
          stored), then the (m × m) solve: ``SketchedRidge(sketch).fit(X, y)``
* predict — sketch features again and Z·w for the first ``--n-predict`` rows (gathered);
            R² is measured on them (training rows: a check that both set-ups agree)

"one process": a fresh process (spawned, so its peak memory is its own) holding X and y in
memory, running the same per-block code with all its threads (BLAS, Numba, FFT).
"cluster": a ``dask.distributed.LocalCluster`` of ``--workers`` processes with one thread
each (Numba limited to one thread per worker), X and y generated on the workers in
``--chunk``-row blocks.  Peak memory is each process's peak resident set size
(``getrusage``), which includes the data it holds; the resident size right after the data
was made is reported beside it.

Results: benchmarks/results/dask_scaling.json and .md (the table the README quotes).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import pickle
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes


def _cpu() -> float:
    """CPU seconds (user + system, all threads) of this process so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _warm_up(sketch_bytes: bytes, d: int) -> None:
    """Imports, dual derivation and Numba compilation once per process, outside the timings."""
    sketch = pickle.loads(sketch_bytes)
    sketch.transform(np.random.default_rng(0).standard_normal((64, d)))


def make_data(n: int, d: int, chunk: int, seed: int = 0):
    """Lazy X (n, d) ~ N(0, 1) and y = sin(2u) + u²/2 + 0.1·noise, u = ⟨x, w⟩/√d, in row blocks."""
    import dask.array as da

    rng = da.random.default_rng(seed)
    X = rng.standard_normal((n, d), chunks=(chunk, d))
    w = np.random.default_rng(seed + 1).standard_normal(d)
    noise = da.random.default_rng(seed + 2).standard_normal(n, chunks=chunk)
    u = (X @ w) / np.sqrt(d)
    y = da.sin(2.0 * u) + 0.5 * u**2 + 0.1 * noise
    return X, y


def make_sketch(args):
    import dualcalc as dc
    from dualcalc.sketch import KernelSketch

    X, _ = make_data(args.n, args.d, args.chunk, args.seed)
    act = dc.activation(args.activation)
    net = dc.serial(dc.Dense(1.5, 0.1), act, dc.Dense(1.5, 0.1), act, dc.Dense(1.5, 0.1))
    degree = None if args.degree == "auto" else int(args.degree)
    sample = X[: min(5000, args.n)].compute(scheduler="sync")
    return KernelSketch(net, n_components=args.m, kernel=args.kernel, degree=degree, random_state=0).fit(sample)


def single_process(args, sketch_bytes: bytes, queue) -> None:
    """The baseline, in a spawned process: X and y in memory, the same per-block code."""
    from dualcalc.distributed import SketchedRidge

    sketch = pickle.loads(sketch_bytes)
    t = time.perf_counter()
    Xd, yd = make_data(args.n, args.d, args.chunk, args.seed)
    X, y = Xd.compute(scheduler="sync"), yd.compute(scheduler="sync")
    t_data = time.perf_counter() - t
    rss_data = _rss()
    _warm_up(sketch_bytes, args.d)
    model = SketchedRidge(sketch, alpha=args.alpha)
    t, c = time.perf_counter(), _cpu()
    model.fit(X, y)
    t_fit, c_fit = time.perf_counter() - t, _cpu() - c
    t, c = time.perf_counter(), _cpu()
    pred = model.predict(X[: args.n_predict])
    t_pred, c_pred = time.perf_counter() - t, _cpu() - c
    yp = y[: args.n_predict]
    r2 = 1.0 - np.sum((yp - pred) ** 2) / np.sum((yp - yp.mean()) ** 2)
    queue.put({"data_s": t_data, "fit_s": t_fit, "predict_s": t_pred, "fit_cpu_s": c_fit, "predict_cpu_s": c_pred,
               "r2": float(r2),
               "rss_after_data": rss_data, "peak_rss": _peak_rss(), "coef": model.coef_,
               "intercept": model.intercept_, "pred_head": pred[:1000]})


def cluster_run(args, sketch) -> dict:
    import dask
    from dask.distributed import Client, LocalCluster, wait

    from dualcalc.distributed import SketchedRidge

    cluster = None
    if args.scheduler:
        client = Client(args.scheduler)
    else:
        env = {"NUMBA_NUM_THREADS": "1"}
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None, env=env, silence_logs=40)
        client = Client(cluster)
    try:
        client.wait_for_workers(args.workers if not args.scheduler else 1)
        n_workers = len(client.scheduler_info()["workers"])
        X, y = make_data(args.n, args.d, args.chunk, args.seed)
        t = time.perf_counter()
        X, y = client.persist([X, y])
        wait([X, y])
        t_data = time.perf_counter() - t
        rss_data = client.run(_rss)
        client.run(_warm_up, pickle.dumps(sketch), args.d)
        model = SketchedRidge(sketch, alpha=args.alpha)

        def cpu_all() -> float:  # workers and this client (the solve runs here)
            return sum(client.run(_cpu).values()) + _cpu()

        t, c = time.perf_counter(), cpu_all()
        model.fit(X, y)
        t_fit, c_fit = time.perf_counter() - t, cpu_all() - c
        t, c = time.perf_counter(), cpu_all()
        pred = model.predict(X[: args.n_predict])
        pred_np, y_np = dask.compute(pred, y[: args.n_predict])
        t_pred, c_pred = time.perf_counter() - t, cpu_all() - c
        r2 = 1.0 - np.sum((y_np - pred_np) ** 2) / np.sum((y_np - y_np.mean()) ** 2)
        peaks = client.run(_peak_rss)
        return {"workers": n_workers, "data_s": t_data, "fit_s": t_fit, "predict_s": t_pred, "fit_cpu_s": c_fit,
                "predict_cpu_s": c_pred, "r2": float(r2),
                "rss_after_data": rss_data, "peak_rss": peaks, "coef": model.coef_,
                "intercept": model.intercept_, "pred_head": pred_np[:1000], "client_peak_rss": _peak_rss()}
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _gb(b) -> str:
    return f"{b / 2**30:.2f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=100)
    p.add_argument("--m", type=int, default=2048, help="sketch components")
    p.add_argument("--chunk", type=int, default=50_000, help="rows per Dask block")
    p.add_argument("--n-predict", type=int, default=100_000, help="rows predicted (the first ones)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--kernel", choices=("nngp", "ntk"), default="nngp")
    p.add_argument("--degree", default="auto", help="sketch degree per activation ('auto': KernelSketch's choice)")
    p.add_argument("--activation", default="relu")
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scheduler", default=None, help="address of an existing dask scheduler (instead of a local cluster)")
    p.add_argument("--skip-single", action="store_true", help="no one-process baseline")
    p.add_argument("--out", default=str(RESULTS / "dask_scaling"), help="results path without extension")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    sketch = make_sketch(args)
    print(f"sketch fitted in {time.perf_counter() - t0:.1f}s: method {sketch.method_}, degrees {sketch.degrees_}",
          flush=True)
    single = None
    if not args.skip_single:
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        proc = ctx.Process(target=single_process, args=(args, pickle.dumps(sketch), q))
        proc.start()
        single = q.get()
        proc.join()
        print(f"one process: fit {single['fit_s']:.1f}s, predict {single['predict_s']:.1f}s, "
              f"peak {_gb(single['peak_rss'])} GB", flush=True)
    dist = cluster_run(args, sketch)
    print(f"cluster ({dist['workers']} workers): fit {dist['fit_s']:.1f}s, predict {dist['predict_s']:.1f}s, "
          f"peak per worker {', '.join(_gb(v) for v in dist['peak_rss'].values())} GB", flush=True)

    agree = None
    if single is not None:
        scale = np.max(np.abs(single["coef"]))
        agree = {"coef_max_rel_diff": float(np.max(np.abs(dist["coef"] - single["coef"])) / scale),
                 "pred_max_abs_diff": float(np.max(np.abs(dist["pred_head"] - single["pred_head"])))}
    record = {
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "sketch": {"method": sketch.method_, "degrees": list(map(int, sketch.degrees_))},
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform()},
        "one_process": None if single is None else {k: v for k, v in single.items()
                                                    if k not in ("coef", "pred_head", "intercept")},
        "cluster": {k: v for k, v in dist.items() if k not in ("coef", "pred_head", "intercept")},
        "agreement": agree,
    }
    rows = [f"| set-up | fit: wall (s) | fit: CPU (s) | predict {args.n_predict:,}: wall (s) | predict: CPU (s) "
            "| peak memory per process (GB) | resident after data (GB) | R² |",
            "|---|---:|---:|---:|---:|---|---|---:|"]
    if single is not None:
        rows.append(f"| one process (all threads) | {single['fit_s']:.0f} | {single['fit_cpu_s']:.0f} | "
                    f"{single['predict_s']:.0f} | {single['predict_cpu_s']:.0f} | "
                    f"{_gb(single['peak_rss'])} | {_gb(single['rss_after_data'])} | {single['r2']:.4f} |")
    rows.append(f"| LocalCluster, {dist['workers']} workers × 1 thread | {dist['fit_s']:.0f} | {dist['fit_cpu_s']:.0f} | "
                f"{dist['predict_s']:.0f} | {dist['predict_cpu_s']:.0f} | "
                f"{' / '.join(_gb(v) for v in dist['peak_rss'].values())} | "
                f"{' / '.join(_gb(v) for v in dist['rss_after_data'].values())} | {dist['r2']:.4f} |")
    c = record["config"]
    md = [f"Sketched ridge, n = {c['n']:,}, d = {c['d']}, m = {c['m']}, {c['kernel'].upper()} of "
          f"{c['activation']} (2 hidden layers, biases), sketch degrees {record['sketch']['degrees']}, "
          f"blocks of {c['chunk']:,} rows; {os.cpu_count()} CPU cores; "
          f"`{' '.join(['python benchmarks/dask_scaling.py', *(sys.argv[1:] if argv is None else argv)])}`", "", *rows]
    if agree is not None:
        md += ["", f"Cluster vs one process: coefficients agree to {agree['coef_max_rel_diff']:.1e} (relative), "
                   f"predictions to {agree['pred_max_abs_diff']:.1e}."]
    load = os.getloadavg()
    md += ["", f"Load average during the run (other jobs included): {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; "
               "CPU seconds are the sum over the process's threads (cluster: all workers and the client)."]
    text = "\n".join(md) + "\n"
    print("\n" + text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2, default=float) + "\n")
    out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
