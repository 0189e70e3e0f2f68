"""Exact NNGP/NTK of depth-3 fully connected networks: dualcalc against neural-tangents.

    python benchmarks/fc_kernels.py                       # full run, writes benchmarks/results/fc_kernels.md
    python benchmarks/fc_kernels.py --sizes 1000 --repeats 3 --acts relu   # a quick look
    python benchmarks/fc_kernels.py --piecewise --sizes 1000 --nt-n 100   # ELU/SELU/hard tanh rows (minutes)
    python benchmarks/fc_kernels.py --residual            # residual nets vs neural-tangents, n = 4000 (minutes)

Same data (X ~ N(0, 1), n × 100, rows rescaled by factors in [0.5, 1.5] so the norms vary),
same dtype for both libraries (float32 and float64), networks
Dense(1.5, 0.1) → σ → Dense(1.5, 0.1) → σ → Dense(1.5, 0.1) with σ ∈ {ReLU, GeLU, erf, tanh}.

* dualcalc: ``net.kernel(X, backend="numba", dtype=...)`` — everything included (per-point
  plan and Hermite tables, Gram product, fused kernel, allocation of the outputs).
* neural-tangents: ``jax.jit(kernel_fn)`` for the closed forms; tanh has none there, so it is
  ``stax.ElementwiseNumerical(jnp.tanh, deg=25)`` batched with ``nt.batch(kernel_fn, 1000)``
  (an outer jit around the batched function tries to allocate 40 GB at n = 4000; docs/peers.md).
* JAX's x64 mode is on for the float64 runs and off for the float32 ones (with it on,
  neural-tangents would compute float32 inputs in float64).
* Timing: warm-up (compilation) excluded, median of ``--repeats`` (≥ 3; neural-tangents) and
  ``--dc-repeats`` (7; dualcalc, cheap) runs, wall clock,
  process CPU time beside it (the machine may be shared: CPU time is the steadier number).
* "Gram+write": the matrix product plus one pass that writes both outputs, i.e. dualcalc on
  ``serial(Dense(1.5, 0.1))``; "ns/(entry·layer)": (time − that) / (n² × 2 activation layers).
* Error: against a high-precision reference on all pairs among 30 rows (16 for tanh) and
  their diagonal, max |K_ij − ref_ij| / √(ref_ii ref_jj), NNGP and NTK.  Reference: the
  closed forms evaluated along the recursion with mpmath at 40 digits from the exact inputs;
  for tanh, 2-D composite Gauss–Legendre quadrature per layer (see _reference_quadrature).
* ``--memory N``: peak resident memory of one K(X, X) at n = N in a fresh process, against the
  size of its outputs.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dualcalc as dc  # noqa: E402

W_STD, B_STD = 1.5, 0.1
D = 100
ERR_ROWS = 30
TANH_ERR_ROWS = 16  # the quadrature reference is slower


def make_data(n_max: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_max, D)) * rng.uniform(0.5, 1.5, size=(n_max, 1))


def dc_net(act: str):
    a = dc.activation(act)
    return dc.serial(dc.Dense(W_STD, B_STD), a, dc.Dense(W_STD, B_STD), a, dc.Dense(W_STD, B_STD))


def timed(fn, repeats: int):
    """(median wall, median cpu, last result, fastest wall) over ``repeats`` runs (warm-up
    done by the caller)."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        out = None
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), out, min(walls)


# ------------------------------------------------------------------------------------------------
# high-precision reference on a few pairs
def reference(act: str, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NNGP, NTK (m × m, float64) of the m rows of X (float64 values taken exactly)."""
    import mpmath as mp

    m = X.shape[0]
    if act == "tanh":
        return _reference_quadrature(X[:TANH_ERR_ROWS])
    mp.mp.dps = 40
    import sympy as sp

    from dualcalc.symbols import c, q1, q2, rho

    dual = dc.activation(act).dual  # k, k̇ in (q1, q2, c, ρ); ρ = 1 exactly on the diagonal
    fk = sp.lambdify((q1, q2, c, rho), dual.nngp_rho, modules="mpmath")
    ft = sp.lambdify((q1, q2, c, rho), dual.ntk_rho, modules="mpmath")
    rows = [[mp.mpf(float(v)) for v in X[i]] for i in range(m)]
    G = [[mp.fsum(a * b for a, b in zip(rows[i], rows[j])) / D for j in range(m)] for i in range(m)]
    w2, b2 = mp.mpf(W_STD) ** 2, mp.mpf(B_STD) ** 2
    K = [[G[i][j] for j in range(m)] for i in range(m)]
    T = [[mp.mpf(0)] * m for _ in range(m)]
    first = True
    for layer in ("dense", "act", "dense", "act", "dense"):
        if layer == "dense":
            K = [[w2 * K[i][j] + b2 for j in range(m)] for i in range(m)]
            T = [[(K[i][j] if first else w2 * T[i][j] + K[i][j]) for j in range(m)] for i in range(m)]
            first = False
        else:
            q = [K[i][i] for i in range(m)]
            Kn = [[None] * m for _ in range(m)]
            for i in range(m):
                for j in range(m):
                    cc = q[i] if i == j else K[i][j]
                    r = mp.mpf(1) if i == j else cc / mp.sqrt(q[i] * q[j])
                    Kn[i][j] = fk(q[i], q[j], cc, r)
                    T[i][j] = T[i][j] * ft(q[i], q[j], cc, r)
            K = Kn
    return (np.array([[float(v) for v in r] for r in K]), np.array([[float(v) for v in r] for r in T]))


def _gl_nodes(width: float = 0.2, order: int = 12, half: float = 10.0):
    """Composite Gauss–Legendre nodes/weights for ∫ f(z) φ(z) dz on [−half, half] (φ: N(0, 1) density)."""
    x, w = np.polynomial.legendre.leggauss(order)
    edges = np.arange(-half, half + 1e-12, width)
    a, b = edges[:-1, None], edges[1:, None]
    z = ((a + b) / 2 + (b - a) / 2 * x[None, :]).ravel()
    wz = ((b - a) / 2 * w[None, :]).ravel() * np.exp(-z * z / 2) / np.sqrt(2 * np.pi)
    return z, wz


def _tanh_pair(q1v, q2v, cv, z, w):
    """(E[tanh u tanh v], E[sech²u sech²v]) for (u, v) ~ N(0, [[q1, c], [c, q2]]) on a 2-D grid
    (u = √q1 z1, v = √q2 (ρ z1 + √(1−ρ²) z2))."""
    r = float(np.clip(cv / np.sqrt(q1v * q2v), -1.0, 1.0))
    tu = np.tanh(np.sqrt(q1v) * z)
    tv = np.tanh(np.sqrt(q2v) * (r * z[:, None] + np.sqrt(max(1.0 - r * r, 0.0)) * z[None, :]))
    inner_k = tv @ w  # E over z2, per z1
    inner_t = (1.0 - tv * tv) @ w
    return float(np.sum(w * tu * inner_k)), float(np.sum(w * (1.0 - tu * tu) * inner_t))


def _reference_quadrature(X: np.ndarray, width: float = 0.2):
    """tanh network by 2-D composite Gauss–Legendre (panels of ``width``, 12 nodes, |z| ≤ 10):
    tanh's poles at distance π/(2√q) from the real axis make Gauss–Hermite converge slowly
    at large variances; panel width 0.2 and 0.1 agree to < 1e-13 here."""
    z, w = _gl_nodes(width)
    m = X.shape[0]
    K = X @ X.T / D
    T = np.zeros((m, m))
    first = True
    for layer in ("dense", "act", "dense", "act", "dense"):
        if layer == "dense":
            K = W_STD**2 * K + B_STD**2
            T = K.copy() if first else W_STD**2 * T + K
            first = False
        else:
            q = np.diag(K).copy()
            Kn = np.empty_like(K)
            for i in range(m):
                for j in range(i, m):
                    cc = q[i] if i == j else K[i, j]
                    kv, kd = _tanh_pair(q[i], q[j], cc, z, w)
                    Kn[i, j] = Kn[j, i] = kv
                    T[i, j] = T[i, j] * kd
                    if j != i:
                        T[j, i] = T[j, i] * kd
            K = Kn
    return K, T


def rel_error(A: np.ndarray, R: np.ndarray) -> float:
    s = np.sqrt(np.outer(np.diag(R), np.diag(R)))
    return float(np.max(np.abs(A - R) / s))


# ------------------------------------------------------------------------------------------------
# neural-tangents
def nt_kernel_fn(act: str, en_deg: int, en_batch: int):
    import jax
    import jax.numpy as jnp
    import neural_tangents as nt
    from neural_tangents import stax

    layer = {"relu": stax.Relu, "gelu": lambda: stax.Gelu(approximate=False), "erf": stax.Erf}.get(act)
    numerical = layer is None
    if numerical:
        layer = lambda: stax.ElementwiseNumerical(jnp.tanh, deg=en_deg)  # noqa: E731
    _, _, kfn = stax.serial(stax.Dense(1, W_STD, B_STD), layer(), stax.Dense(1, W_STD, B_STD), layer(),
                            stax.Dense(1, W_STD, B_STD))
    if numerical:
        batched = nt.batch(kfn, batch_size=en_batch)
        return (lambda x: jax.block_until_ready(batched(x, None, ("nngp", "ntk")))), True
    jitted = jax.jit(kfn, static_argnames=("get",))
    return (lambda x: jax.block_until_ready(jitted(x, None, get=("nngp", "ntk")))), False


# ------------------------------------------------------------------------------------------------
def peak_memory(n: int, act: str = "relu") -> dict:
    """Peak RSS of one K(X, X) (both outputs, float64) at n in a fresh process."""
    code = textwrap.dedent(f"""
        import json, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        import numpy as np
        import dualcalc as dc
        X = np.random.default_rng(0).normal(size=({n}, {D}))
        a = dc.activation({act!r})
        net = dc.serial(dc.Dense({W_STD}, {B_STD}), a, dc.Dense({W_STD}, {B_STD}), a, dc.Dense({W_STD}, {B_STD}))
        net.kernel(X[:64], backend="numba")
        def status(key):
            for line in open("/proc/self/status"):
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        with open("/proc/self/clear_refs", "w") as fh:  # reset the peak (VmHWM) left by compilation
            fh.write("5")
        before = status("VmRSS")
        t = time.perf_counter(); c = time.process_time()
        k = net.kernel(X, backend="numba", progress=False)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        peak = status("VmHWM")
        print(json.dumps(dict(n={n}, wall=wall, cpu=cpu, before=before, peak=peak,
                              outputs=k.nngp.nbytes + k.ntk.nbytes)))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


PIECEWISE = {"relu": "relu", "elu": "elu", "selu": "selu", "hard_tanh": "hard_tanh"}


def _nt_numerical(fn, deg: int):
    import jax
    import neural_tangents as nt
    from neural_tangents import stax

    layer = lambda: stax.ElementwiseNumerical(fn, deg=deg)  # noqa: E731
    _, _, kfn = stax.serial(stax.Dense(1, W_STD, B_STD), layer(), stax.Dense(1, W_STD, B_STD), layer(),
                            stax.Dense(1, W_STD, B_STD))
    # its quadrature holds batch² × deg² values per layer: 50 × 50 at deg 800 needs 26 GB
    batched = nt.batch(kfn, batch_size=50 if deg <= 100 else 10)
    return lambda x: jax.block_until_ready(batched(x, None, ("nngp", "ntk")))


def piecewise_rows(args) -> int:
    """ELU, SELU, hard tanh beside ReLU (float64, K(X, X), depth 3): dualcalc (whatever method the
    activation has in this tree: closed form with Φ₂ once the piecewise rule lands, else Hermite) per
    entry, and neural-tangents' ElementwiseNumerical(σ, deg) on a smaller n: speed per entry and max
    relative error (NNGP / NTK, normalised by the diagonal) against dualcalc's kernel on the same rows."""
    import warnings

    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    fns = {"relu": lambda x: jnp.maximum(x, 0.0), "elu": jax.nn.elu, "selu": jax.nn.selu,
           "hard_tanh": lambda x: jnp.clip(x, -1.0, 1.0)}
    n = max(args.sizes)
    X = make_data(n)
    load0, t0 = os.getloadavg(), time.time()
    out = ["| σ | dualcalc method | dualcalc ns/entry (n = %d) | × ReLU | nt deg | nt ns/entry (n = %d) | dualcalc / nt per entry | nt error NNGP / NTK |"
           % (n, args.nt_n), "|---|---|---:|---:|---:|---:|---:|---|"]
    base = None
    for name in args.piecewise_acts:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = dc.activation(PIECEWISE[name])
            net = dc.serial(dc.Dense(W_STD, B_STD), a, dc.Dense(W_STD, B_STD), a, dc.Dense(W_STD, B_STD))
            net.kernel(X[:50], backend="numba")
            w, _, _, _ = timed(lambda: net.kernel(X, backend="numba"), args.dc_repeats)
            ref = net.kernel(X[:args.nt_n], backend="numba")
        per = w / (n * n) * 1e9
        base = per if name == "relu" else base
        for deg in args.nt_degs:
            f = _nt_numerical(fns[name], deg)
            Xs = jnp.asarray(X[:args.nt_n])
            f(Xs)
            tw, _, res, _ = timed(lambda: f(Xs), max(1, args.repeats))
            nper = tw / args.nt_n**2 * 1e9
            e1, e2 = rel_error(np.asarray(res.nngp), ref.nngp), rel_error(np.asarray(res.ntk), ref.ntk)
            ratio = f"{per / base:.1f}×" if base else "—"
            out.append(f"| {name} | {a.dual.method} | {per:.1f} | {ratio} | {deg} | {nper:.0f} | "
                       f"{nper / per:.0f}× faster | {e1:.1e} / {e2:.1e} |")
            print(out[-1], flush=True)
    load1 = os.getloadavg()
    text = ["# Piecewise activations (ELU, SELU, hard tanh) beside ReLU: dualcalc vs neural-tangents ElementwiseNumerical",
            "", f"Generated by `python benchmarks/fc_kernels.py --piecewise {' '.join(sys.argv[2:])}` on "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC ({(time.time() - t0) / 60:.1f} min); "
            f"{platform.machine()}, {os.cpu_count()} cores, load {load0[0]:.1f} / {load1[0]:.1f} (shared machine: compare "
            "ratios within this run).", "",
            "Network Dense(1.5, 0.1) → σ → Dense(1.5, 0.1) → σ → Dense(1.5, 0.1), float64, K(X, X) NNGP and NTK, "
            "X: n × 100. dualcalc: `net.kernel(X, backend='numba')`, everything included, median wall of "
            f"{args.dc_repeats}; neural-tangents: `nt.batch(kernel_fn, 50)` (10 above deg 100: memory) with `stax.ElementwiseNumerical(σ, deg)`, "
            f"median of {max(1, args.repeats)}. Error: max |K_nt − K_dc| / √(K_ii K_jj) against dualcalc on the same "
            "rows (dualcalc's own accuracy: its method column — the closed forms of the piecewise-exponential rule are "
            "≤ 1e-10 against an independent oracle, docs/piecewise.md).", ""] + out + [""]
    Path(args.out).write_text("\n".join(text))
    print("wrote", args.out)
    return 0


# ------------------------------------------------------------------------------------------------
# residual networks (--residual)
RES_W = 1.0  # Dense W_std inside the residual branch: the variance grows by ~(1 + W²/4)·per block for ReLU


def res_nets(act: str, blocks: int):
    """(dualcalc, neural-tangents kernel_fn) of Dense → [x + Dense(σ(Dense(σ(x))))]×blocks → σ → Dense."""
    from dualcalc.network import FanInSum, FanOut, Identity, parallel

    a = dc.activation(act)
    block = dc.serial(FanOut(2), parallel(dc.serial(a, dc.Dense(RES_W, B_STD), a, dc.Dense(RES_W, B_STD)),
                                          Identity()), FanInSum())
    net = dc.serial(dc.Dense(W_STD, B_STD), *[block] * blocks, a, dc.Dense(W_STD, B_STD))
    from neural_tangents import stax

    s = {"relu": stax.Relu, "gelu": lambda: stax.Gelu(approximate=False)}[act]
    nblock = stax.serial(stax.FanOut(2), stax.parallel(stax.serial(s(), stax.Dense(1, RES_W, B_STD), s(),
                                                                   stax.Dense(1, RES_W, B_STD)), stax.Identity()),
                         stax.FanInSum())
    kfn = stax.serial(stax.Dense(1, W_STD, B_STD), *[nblock] * blocks, s(), stax.Dense(1, W_STD, B_STD))[2]
    return net, kfn


def _max_rel(A, R) -> tuple[float, float]:
    """max |A − R| / √(R_ii R_jj), off the diagonal and on it (float64)."""
    A, R = np.asarray(A, dtype=np.float64), np.asarray(R, dtype=np.float64)
    d = np.sqrt(np.diag(R))
    E = np.abs(A - R) / np.outer(d, d)
    diag = float(np.max(np.diag(E)))
    np.fill_diagonal(E, 0.0)
    return float(E.max()), diag


def residual_rows(args) -> int:
    """Residual and serial depth-3 networks, dualcalc (numba) vs jit neural-tangents, side by side in one run."""
    import warnings

    import jax

    warnings.filterwarnings("ignore", message=".*FanIn. layers assume independent inputs")  # true here: Dense in each branch
    n_max = max(args.sizes)
    X64 = make_data(n_max)
    load0, t0 = os.getloadavg(), time.time()
    rows = []
    for dtname in args.dtypes:
        dt = np.dtype(dtname)
        jax.config.update("jax_enable_x64", dt == np.float64)  # nt computes float32 only with x64 off
        Xall = X64.astype(dt)
        for act in args.acts:
            net_r, kfn_r = res_nets(act, args.blocks)
            nt_s = nt_kernel_fn(act, args.en_deg, args.en_batch)[0]
            jit_r = jax.jit(kfn_r, static_argnames=("get",))
            nt_r = lambda x: jax.block_until_ready(jit_r(x, None, get=("nngp", "ntk")))  # noqa: E731
            for kind, net, fn in ((f"residual, {args.blocks} blocks", net_r, nt_r), ("serial, depth 3", dc_net(act), nt_s)):
                net.kernel(Xall[:200], backend="numba", dtype=dt)  # compile (or load) the kernel
                for n in args.sizes:
                    X = Xall[:n]
                    w, c, k, wmin = timed(lambda: net.kernel(X, backend="numba", dtype=dt), args.dc_repeats)
                    fn(X)  # jit compiles per shape: warm-up excluded
                    w2, c2, kn, w2min = timed(lambda: fn(X), args.repeats)
                    err = [_max_rel(k.nngp, kn.nngp), _max_rel(k.ntk, kn.ntk)]
                    row = dict(net=kind, act=act, dtype=dtname, n=n, dc_wall=w, dc_cpu=c, dc_min=wmin, nt_wall=w2,
                               nt_cpu=c2, nt_min=w2min, err_off=(err[0][0], err[1][0]), err_diag=(err[0][1], err[1][1]))
                    if dt != np.float64:  # whose float32 diagonal is off: both against dualcalc in float64
                        t64 = np.diag(net.kernel(X64[:n], backend="numba", dtype=np.float64).ntk)
                        row["diag_vs_f64"] = tuple(float(np.max(np.abs(np.diag(np.asarray(m.ntk, np.float64)) - t64) / t64))
                                                   for m in (k, kn))
                    del k, kn
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    load1 = os.getloadavg()
    import jax as _jax
    import numba
    import neural_tangents as nt

    from dualcalc.fileio import atomic_write_text

    L = ["# Residual fully connected networks: dualcalc vs neural-tangents (serial depth-3 rows of the same run beside them)",
         "",
         f"Generated by `python benchmarks/fc_kernels.py {' '.join(sys.argv[1:])}` on "
         f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC ({(time.time() - t0) / 60:.1f} min); "
         f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; dualcalc {dc.__version__}, "
         f"numpy {np.__version__}, numba {numba.__version__}, neural-tangents {nt.__version__}, jax {_jax.__version__}.",
         f"Load average at start/end: {load0[0]:.1f} / {load1[0]:.1f} (a shared machine: wall times are inflated by other "
         "jobs when it is above the core count; CPU seconds beside them; compare ratios within this run).",
         "",
         f"Residual network: Dense({W_STD}, {B_STD}) → {args.blocks} × [FanOut(2) → parallel(σ → Dense({RES_W}, {B_STD}) → σ → "
         f"Dense({RES_W}, {B_STD}), Identity) → FanInSum] → σ → Dense({W_STD}, {B_STD}) (branch W_std = {RES_W}: each block "
         "adds the branch's variance to the skip's, so the variance grows geometrically with the depth — ×≈1.25 per block "
         "for ReLU — and stays bounded at this depth); the same network in `stax.serial/FanOut/parallel/Identity/FanInSum`. "
         f"Serial: Dense({W_STD}, {B_STD}) → σ → Dense({W_STD}, {B_STD}) → σ → Dense({W_STD}, {B_STD}) (the default mode's network).",
         f"X: n × {D}, N(0, 1) rows scaled by U(0.5, 1.5); K(X, X), NNGP and NTK, same dtype for both libraries. "
         "dualcalc: `net.kernel(X, backend=\"numba\", dtype=...)`, everything included; neural-tangents: "
         "`jax.jit(kernel_fn)` (JAX x64 on for float64, off for float32). "
         f"Median of {args.dc_repeats} (dualcalc) / {args.repeats} (neural-tangents) runs after a warm-up (compilation "
         "excluded); wall seconds (CPU seconds of the process, all threads).",
         "Agreement: max |K_dc − K_nt| / √(K_nt,ii K_nt,jj) over all n² entries, NNGP / NTK, off the diagonal and on it "
         "(neural-tangents evaluates the diagonal at ρ = 1 − ε through arccos: its diagonal NTK is off at the 1e-8 "
         "level on the serial net too, and in float32 at ~√ε ≈ 3e-4 for ReLU — the last column, max relative difference "
         "of each library's float32 diagonal to dualcalc's float64 one, says whose it is; tests/test_branches.py "
         "checks dualcalc's diagonal against a 40-digit recursion).",
         "",
         "| network | σ | dtype | n | dualcalc s | neural-tangents s | speed-up (wall) | speed-up (CPU) "
         "| max rel. diff off-diag NNGP / NTK | on the diagonal NNGP / NTK | float32 NTK diagonal vs dualcalc float64: "
         "dualcalc / nt |",
         "|---|---|---|---:|---:|---:|---:|---:|---|---|---|"]
    for r in rows:
        L.append(f"| {r['net']} | {r['act']} | {r['dtype']} | {r['n']} | {r['dc_wall']:.3f} ({r['dc_cpu']:.2f}) "
                 f"| {r['nt_wall']:.3f} ({r['nt_cpu']:.2f}) | {r['nt_wall'] / r['dc_wall']:.1f}× "
                 f"| {r['nt_cpu'] / max(r['dc_cpu'], 1e-9):.1f}× "
                 f"| {r['err_off'][0]:.1e} / {r['err_off'][1]:.1e} | {r['err_diag'][0]:.1e} / {r['err_diag'][1]:.1e} "
                 + (f"| {r['diag_vs_f64'][0]:.1e} / {r['diag_vs_f64'][1]:.1e} |" if "diag_vs_f64" in r else "| — |"))
    for key, what in (("wall", "wall"), ("cpu", "CPU")):
        L += ["", f"Speed-up over neural-tangents on the residual net ÷ the same on the serial net, same σ, dtype, n ({what}): "
              + "; ".join(f"{a} {d} n={n}: {res / ser:.2f}" for a, d, n, res, ser in _res_vs_serial(rows, key)) + "."]
    atomic_write_text(args.out, "\n".join(L) + "\n")
    print("wrote", args.out)
    return 0


def _res_vs_serial(rows, key="wall"):
    by = {}
    for r in rows:
        by.setdefault((r["act"], r["dtype"], r["n"]), {})[r["net"].split(",")[0]] = r[f"nt_{key}"] / r[f"dc_{key}"]
    return [(a, d, n, v["residual"], v["serial"]) for (a, d, n), v in by.items() if len(v) == 2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="default 1000 2000 4000 (--residual: 4000)")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    ap.add_argument("--acts", nargs="+", default=None, help="default relu gelu erf tanh (--residual: relu gelu)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of neural-tangents (median)")
    ap.add_argument("--dc-repeats", type=int, default=7, help="runs of dualcalc and of Gram+write (median)")
    ap.add_argument("--en-deg", type=int, default=25)
    ap.add_argument("--en-batch", type=int, default=1000)
    ap.add_argument("--skip-nt", action="store_true", help="time dualcalc only")
    ap.add_argument("--memory", type=int, default=20000, help="n of the peak-memory run (0: skip)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fc_kernels.md"))
    ap.add_argument("--piecewise", action="store_true",
                    help="only the ELU/SELU/hard tanh/ReLU rows vs ElementwiseNumerical (a few minutes)")
    ap.add_argument("--piecewise-acts", nargs="+", default=["relu", "elu", "selu", "hard_tanh"])
    ap.add_argument("--nt-degs", type=int, nargs="+", default=[25, 800])
    ap.add_argument("--nt-n", type=int, default=100, help="rows for the ElementwiseNumerical runs")
    ap.add_argument("--residual", action="store_true",
                    help="only residual FC nets (and the serial depth-3 rows) vs jit neural-tangents, "
                         "writes benchmarks/results/fc_residual.md (minutes)")
    ap.add_argument("--blocks", type=int, default=4, help="residual blocks (--residual)")
    args = ap.parse_args(argv)
    if args.sizes is None:
        args.sizes = [4000] if args.residual else [1000, 2000, 4000]
    if args.acts is None:
        args.acts = ["relu", "gelu"] if args.residual else ["relu", "gelu", "erf", "tanh"]
    if args.residual:
        if args.out.endswith("fc_kernels.md"):
            args.out = str(ROOT / "benchmarks" / "results" / "fc_residual.md")
        return residual_rows(args)
    if args.piecewise:
        if args.out.endswith("fc_kernels.md"):
            args.out = str(ROOT / "benchmarks" / "results" / "fc_piecewise.md")
        return piecewise_rows(args)
    if args.repeats < 3:
        print("note: fewer than 3 repeats; the table will say so", file=sys.stderr)

    if not args.skip_nt:
        import jax

        jax.config.update("jax_enable_x64", True)
    X64 = make_data(max(args.sizes))
    err_idx = np.arange(ERR_ROWS)
    load0 = os.getloadavg()
    rows = []
    t_start = time.time()
    for dtname in args.dtypes:
        dt = np.dtype(dtname)
        Xall = X64.astype(dt)
        if not args.skip_nt:  # neural-tangents computes in float32 only with JAX's x64 mode off
            jax.config.update("jax_enable_x64", dt == np.float64)
        base_net = dc.serial(dc.Dense(W_STD, B_STD))
        base_net.kernel(Xall[:100], backend="numba", dtype=dt)
        base = {}
        for n in args.sizes:
            bw, bc, _, bmin = timed(lambda: base_net.kernel(Xall[:n], backend="numba", dtype=dt), args.dc_repeats)
            base[n] = (bw, bc, bmin)
        for act in args.acts:
            ref = reference(act, Xall[err_idx].astype(np.float64))
            net = dc_net(act)
            net.kernel(Xall[:200], backend="numba", dtype=dt)  # compile (or load) the kernel
            fn = None
            if not args.skip_nt:
                fn, numerical = nt_kernel_fn(act, args.en_deg, args.en_batch)
                if numerical:  # one warm-up compiles the (batch × batch) block used at every n
                    fn(Xall[: args.en_batch])
            idx = err_idx[: ref[0].shape[0]]
            sub = np.ix_(idx, idx)
            for n in args.sizes:
                X = Xall[:n]
                w, c, k, wmin = timed(lambda: net.kernel(X, backend="numba", dtype=dt), args.dc_repeats)
                e_dc = (rel_error(k.nngp[sub].astype(np.float64), ref[0]), rel_error(k.ntk[sub].astype(np.float64), ref[1]))
                del k
                row = dict(act=act, dtype=dtname, n=n, dc_wall=w, dc_cpu=c, base_wall=base[n][0], base_cpu=base[n][1],
                           ns=max(wmin - base[n][2], 0.0) / (n * n * 2) * 1e9, dc_min=wmin, base_min=base[n][2],
                           dc_err=e_dc)
                if fn is not None:
                    if not numerical:
                        fn(X)  # jit compiles per shape: warm-up excluded
                    w2, c2, kn, _ = timed(lambda: fn(X), args.repeats)
                    kk = (np.asarray(kn.nngp)[sub].astype(np.float64), np.asarray(kn.ntk)[sub].astype(np.float64))
                    del kn
                    row.update(nt_wall=w2, nt_cpu=c2, nt_err=(rel_error(kk[0], ref[0]), rel_error(kk[1], ref[1])),
                               nt_kind=f"ElementwiseNumerical(deg={args.en_deg}), nt.batch({args.en_batch})"
                               if numerical else "jit(kernel_fn)")
                rows.append(row)
                print(json.dumps(row), flush=True)
    mem = peak_memory(args.memory) if args.memory else None
    load1 = os.getloadavg()
    write_table(args, rows, mem, load0, load1, time.time() - t_start)
    return 0


def write_table(args, rows, mem, load0, load1, seconds):
    import numba

    from dualcalc.fileio import atomic_write_text

    versions = [f"dualcalc {dc.__version__}", f"numpy {np.__version__}", f"numba {numba.__version__}"]
    try:
        import jax
        import neural_tangents as nt

        versions += [f"neural-tangents {nt.__version__}", f"jax {jax.__version__}"]
    except Exception:  # noqa: BLE001
        pass
    L = [
        "# Exact NNGP/NTK of depth-3 fully connected networks: dualcalc vs neural-tangents",
        "",
        f"Generated by `python benchmarks/fc_kernels.py {' '.join(sys.argv[1:])}`".rstrip() + " on "
        + datetime.datetime.now().strftime("%Y-%m-%d %H:%M") + f" ({seconds / 60:.0f} min).",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}; "
        + ", ".join(versions) + ".",
        f"Load average at start/end: {load0[0]:.1f} / {load1[0]:.1f} (a shared machine: wall times are inflated "
        "by other jobs when it is above the core count; CPU seconds are given beside them).",
        "",
        f"Network Dense({W_STD}, {B_STD}) → σ → Dense({W_STD}, {B_STD}) → σ → Dense({W_STD}, {B_STD}); "
        f"X: n × {D}, N(0, 1) rows scaled by U(0.5, 1.5); K(X, X), NNGP and NTK; "
        f"median of {args.dc_repeats} (dualcalc) / {args.repeats} (neural-tangents) runs after a warm-up; "
        "wall seconds (CPU seconds of the process, all threads).",
        "neural-tangents: `jax.jit(kernel_fn)` (JAX x64 mode on for float64, off for float32); "
        "tanh has no closed form there: "
        f"`ElementwiseNumerical(jnp.tanh, deg={args.en_deg})` batched with `nt.batch(kernel_fn, {args.en_batch})`.",
        "dualcalc: `net.kernel(X, backend=\"numba\", dtype=...)`, everything included; tanh by its Hermite "
        "series (degree from its 1e-8 tolerance).",
        "Gram+write: the matrix product plus one pass writing both outputs (dualcalc on `serial(Dense)`); "
        "ns/(entry·layer): (dualcalc − Gram+write) / (n² · 2 activation layers), from the fastest wall time of "
        "each (a difference of medians drowns in the load's noise).",
        f"Error: max |K_ij − ref_ij| / √(ref_ii ref_jj) over all pairs of {ERR_ROWS} rows, NNGP / NTK; "
        "reference: mpmath (40 digits) along the recursion for the closed forms; for tanh (16 rows) 2-D "
        "composite Gauss–Legendre quadrature (panel 0.2, 12 nodes, |z| ≤ 10; agrees with panel 0.1 to < 1e-13).",
        "",
        "| σ | dtype | n | dualcalc s | neural-tangents s | speed-up | Gram+write s | ns/(entry·layer) "
        "| dualcalc error NNGP / NTK | neural-tangents error NNGP / NTK |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        nt_s = f"{r['nt_wall']:.3f} ({r['nt_cpu']:.2f})" if "nt_wall" in r else "—"
        sp = f"{r['nt_wall'] / r['dc_wall']:.1f}×" if "nt_wall" in r else "—"
        nt_e = f"{r['nt_err'][0]:.1e} / {r['nt_err'][1]:.1e}" if "nt_err" in r else "—"
        name = r["act"] + (" (Hermite vs ElementwiseNumerical)" if r["act"] == "tanh" else "")
        L.append(f"| {name} | {r['dtype']} | {r['n']} | {r['dc_wall']:.3f} ({r['dc_cpu']:.2f}) | {nt_s} | {sp} "
                 f"| {r['base_wall']:.3f} | {r['ns']:.1f} | {r['dc_err'][0]:.1e} / {r['dc_err'][1]:.1e} | {nt_e} |")
    if mem:
        L += ["", f"Peak memory, K(X, X) with both outputs (float64), ReLU network, n = {mem['n']}: "
              f"outputs {mem['outputs'] / 2**30:.2f} GiB; resident memory before the call "
              f"{mem['before'] / 2**30:.2f} GiB, peak {mem['peak'] / 2**30:.2f} GiB: "
              f"{(mem['peak'] - mem['before'] - mem['outputs']) / 2**20:.1f} MiB beyond the outputs "
              f"({mem['wall']:.1f} s wall, {mem['cpu']:.1f} s CPU)."]
    L += ["", "The cuda backend was not run here (no GPU in this environment); its source compiles to PTX "
          "through NVRTC in the test suite."]
    atomic_write_text(args.out, "\n".join(L) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
