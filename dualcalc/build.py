r"""Batch-compile the activation catalog: ``dualcalc catalog build``.

For every catalog entry (the shipped catalog and the user catalog,
``$DUALCALC_CATALOG_DIR`` or ``~/.config/dualcalc/catalog``):

1. **derive** — ``activation(name)`` at its default parameters and its dual
   (closed form or Hermite series; for Hermite the degree meeting the tolerance);
2. **verify** — compare k and k̇ with the independent quadrature oracle of
   :mod:`dualcalc.verify` at a few (q1, q2, c);
3. **kernels** — generate and compile a small network's kernels,
   ``serial(Dense(1.5, 0.1), act, Dense(1.5, 0.1))``: the Numba backend is run
   and compared with the NumPy reference; the CUDA source is compiled to PTX
   through NVRTC (no GPU needed);
4. **plot** — one PNG per activation (:func:`dualcalc.plotting.plot_activation`).

The output folder holds ``report.md`` (a Markdown table), ``report.json``
(every number), ``png/NAME.png`` and ``manifest.json``, the cache: an entry
whose content hash — of its TOML text, the library's version and source, the
build settings and the target — matches the manifest is reported as cached and
not rebuilt.  A failing entry gets an error line and makes the exit status 1;
the other entries are still built.  Every file is written atomically.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

from .catalog import builtin_catalog_dir, load_dir, parse_entry, user_catalog_dir
from .errors import BackendError, CatalogError, DualcalcError
from .fileio import atomic_write_text

#: Bump when what a build computes or records changes: invalidates every cache.
BUILD_SCHEMA = 1
TARGETS = ("numba", "cuda", "all")
DEFAULT_OUT = Path("build") / "catalog"
#: The network whose kernels are generated and compiled for each entry.
NET_W_STD, NET_B_STD = 1.5, 0.1
#: Largest relative difference accepted between the Numba kernels and the NumPy reference.
KERNEL_RTOL = 1e-8

OK, FAILED, CACHED = "ok", "failed", "cached"


# ---------------------------------------------------------------------------------------------
# what to build
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """One catalog file to build (picklable: it goes to worker processes)."""

    name: str
    text: str
    origin: str  # "builtin" or "user"
    path: str
    key: str = ""


@dataclass
class Plan:
    jobs: list[Job] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)  # files that do not parse: {file, origin, error}
    notes: list[str] = field(default_factory=list)


def collect(*, include_user: bool = True, only: Sequence[str] | None = None) -> Plan:
    """The entries to build: the shipped catalog, then the user catalog (a user entry
    of the same name replaces the shipped one, as in :class:`~dualcalc.catalog.Registry`)."""
    plan = Plan()
    by_name: dict[str, Job] = {}
    folders = [("builtin", builtin_catalog_dir())]
    if include_user:
        folders.append(("user", user_catalog_dir()))
    for origin, folder in folders:
        entries, errors = load_dir(folder, strict=False)
        for fname, err in sorted(errors.items()):
            plan.errors.append({"file": str(folder / fname), "origin": origin, "error": err})
        for name, entry in sorted(entries.items()):
            path = folder / entry.source
            text = path.read_text(encoding="utf-8")
            if name in by_name:
                plan.notes.append(f"{name}: the user catalog entry {path} replaces the shipped one")
            by_name[name] = Job(name, text, origin, str(path))
    if only:
        wanted = list(dict.fromkeys(only))
        broken = {Path(e["file"]).stem for e in plan.errors}  # a file that does not parse has no name
        missing = [n for n in wanted if n not in by_name and n not in broken]
        if missing:
            raise CatalogError(f"--only: not in the catalog: {', '.join(missing)}; "
                               f"known: {', '.join(sorted(by_name))}")
        by_name = {n: by_name[n] for n in wanted if n in by_name}
        plan.errors = [e for e in plan.errors if Path(e["file"]).stem in wanted]
    plan.jobs = [by_name[n] for n in sorted(by_name)]
    return plan


# ---------------------------------------------------------------------------------------------
# cache keys
# ---------------------------------------------------------------------------------------------
def library_fingerprint() -> str:
    """Hash of dualcalc's and codegen's source and the versions of the numerical stack."""
    from ._version import __version__

    h = hashlib.sha256()
    h.update(str(__version__).encode())
    roots = [Path(__file__).resolve().parent]
    try:
        import codegen

        roots.append(Path(codegen.__file__).resolve().parent)
    except ImportError:  # pragma: no cover
        pass
    for root in roots:
        for p in sorted(root.rglob("*.py")):
            h.update(str(p.relative_to(root.parent)).encode())
            h.update(p.read_bytes())
    for dist in ("numpy", "scipy", "sympy", "numba", "matplotlib"):
        try:
            h.update(f"{dist}={metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{dist}=-".encode())
    return h.hexdigest()


def entry_key(job: Job, target: str, fingerprint: str, settings: dict) -> str:
    payload = json.dumps({"schema": BUILD_SCHEMA, "text": job.text, "origin": job.origin,
                          "target": target, "library": fingerprint, "settings": settings},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# one entry (runs in a worker process)
# ---------------------------------------------------------------------------------------------
def _err(stage: str, exc: BaseException) -> str:
    msg = str(exc).strip() or type(exc).__name__
    kind = type(exc).__name__
    return f"{stage}: {kind}: {msg}"


def _finite(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _compile_numba(net, X) -> dict:
    """Run the generated Numba kernels on a small X and compare with the NumPy reference."""
    import importlib
    import numpy as np

    try:
        importlib.import_module("dualcalc.backends")
    except ModuleNotFoundError as exc:
        if exc.name not in ("dualcalc.backends",) and not (exc.name or "").startswith("codegen"):
            raise
        # a partial install without the generated backends: report, don't fail
        return {"status": "skipped", "reason": f"generated backends not available yet ({exc.name} is missing)"}
    t0 = time.perf_counter()
    k = net.kernel(X, backend="numba")
    seconds = time.perf_counter() - t0
    ref = net.kernel(X, backend="numpy")
    diff = 0.0
    for a, b in ((k.nngp, ref.nngp), (k.ntk, ref.ntk)):
        scale = max(float(np.max(np.abs(b))), 1e-300)
        diff = max(diff, float(np.max(np.abs(np.asarray(a, dtype=np.float64) - b))) / scale)
    out = {"status": OK, "seconds": seconds, "max_rel_diff_vs_numpy": diff}
    if not diff <= KERNEL_RTOL:
        out["status"] = FAILED
        out["error"] = f"numba kernels differ from the numpy reference by {diff:.2e} (> {KERNEL_RTOL:g})"
    return out


def cuda_compiler():
    """The PTX compiler of the CUDA code generator (:func:`codegen.cuda_env.compile_ptx`), or
    (None, why-not) when NVRTC cannot be loaded (the ``cuda`` extra is not installed); no GPU
    is needed."""
    from codegen.cuda_env import compile_ptx, nvrtc_available

    ok, why = nvrtc_available()
    return (compile_ptx, "") if ok else (None, why)


def _compile_cuda(net) -> dict:
    fn, why = cuda_compiler()
    if fn is None:
        return {"status": "skipped", "reason": why}
    t0 = time.perf_counter()
    src = net.source("cuda")
    ptx = fn(src)
    seconds = time.perf_counter() - t0
    size = len(ptx) if isinstance(ptx, str | bytes | bytearray) else None
    return {"status": OK, "seconds": seconds, "ptx_bytes": size, "source_chars": len(src)}


def build_one(job: Job, out_dir: str, target: str, plots: bool = True, tol: float | None = None) -> dict:
    """Derive, verify, compile and plot one entry; never raises (errors go in the record)."""
    import numpy as np

    from .activation import activation
    from .catalog import REGISTRY
    from .network import Dense, serial
    from .verify import verify_activation

    rec: dict[str, Any] = {"name": job.name, "origin": job.origin, "file": job.path, "key": job.key,
                           "status": OK, "errors": []}
    t_entry = time.perf_counter()
    # 1. derive -------------------------------------------------------------------------
    registered = getattr(REGISTRY, "_registered", {})
    previous = registered.get(job.name)
    try:
        entry = parse_entry(job.text, source=Path(job.path).name)
        REGISTRY.add(entry)  # build exactly this text, whatever else is registered
        t0 = time.perf_counter()
        act = activation(job.name)
        dual = act.dual
        degree = dual.degree
        rec["derive_s"] = time.perf_counter() - t0
        rec.update(formula=entry.formula, parameters={k: v for k, v in act.params.items()},
                   method=dual.method, rule=dual.rule, ntk_convention=dual.ntk_convention,
                   hermite_degree=degree, error_estimate=float(dual.error_estimate))
    except Exception as exc:  # noqa: BLE001 - every failure becomes the entry's error line
        rec["status"] = FAILED
        rec["errors"].append(_err("derive", exc))
        rec["total_s"] = time.perf_counter() - t_entry
        return rec
    finally:
        REGISTRY.remove(job.name)
        if previous is not None:
            REGISTRY.add(previous)
    # 2. verify ---------------------------------------------------------------------------
    try:
        t0 = time.perf_counter()
        v = verify_activation(act, tol=tol)
        rec["verify_s"] = time.perf_counter() - t0
        rec["accuracy"] = {"nngp": _finite(v.nngp_error), "ntk": _finite(v.ntk_error), "tolerance": v.tolerance,
                           "points": len(v.points)}
        rec["verified"] = v.passed
        if not v.passed:
            rec["status"] = FAILED
            rec["errors"].append(
                f"verify: dual disagrees with the quadrature oracle: NNGP error {v.nngp_error:.2e}, "
                f"NTK error {v.ntk_error:.2e} (tolerance {v.tolerance:.1e})")
    except Exception as exc:  # noqa: BLE001
        rec["status"] = FAILED
        rec["verified"] = False
        rec["errors"].append(_err("verify", exc))
    # 3. kernels --------------------------------------------------------------------------
    net = serial(Dense(NET_W_STD, NET_B_STD), act, Dense(NET_W_STD, NET_B_STD))
    X = np.random.default_rng(0).standard_normal((6, 5))
    rec["compile"] = {}
    for tgt in (("numba", "cuda") if target == "all" else (target,)):
        try:
            res = _compile_numba(net, X) if tgt == "numba" else _compile_cuda(net)
        except Exception as exc:  # noqa: BLE001
            res = {"status": FAILED, "error": _err(f"compile {tgt}", exc)}
        if res["status"] == FAILED:
            rec["status"] = FAILED
            rec["errors"].append(res["error"] if res["error"].startswith("compile") else f"compile {tgt}: {res['error']}")
        rec["compile"][tgt] = res
    # 4. plot -----------------------------------------------------------------------------
    if plots:
        try:
            from .plotting import save_activation_plot

            t0 = time.perf_counter()
            png = Path(out_dir) / "png" / f"{job.name}.png"
            save_activation_plot(act, png)
            rec["plot_s"] = time.perf_counter() - t0
            rec["png"] = str(png.relative_to(out_dir))
        except Exception as exc:  # noqa: BLE001
            rec["status"] = FAILED
            rec["errors"].append(_err("plot", exc))
    rec["total_s"] = time.perf_counter() - t_entry
    return rec


def _build_one_safe(job: Job, out_dir: str, target: str, plots: bool, tol: float | None) -> dict:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return build_one(job, out_dir, target, plots, tol)
    except Exception as exc:  # noqa: BLE001 - a worker must always answer
        return {"name": job.name, "origin": job.origin, "file": job.path, "key": job.key, "status": FAILED,
                "errors": [_err("build", exc) + "\n" + traceback.format_exc(limit=3)]}


# ---------------------------------------------------------------------------------------------
# the whole catalog
# ---------------------------------------------------------------------------------------------
@dataclass
class BuildResult:
    records: list[dict]
    file_errors: list[dict]
    out_dir: Path
    cached: int
    wall_s: float
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.records if r["status"] == FAILED]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.file_errors

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1


def _load_manifest(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("schema") == BUILD_SCHEMA and isinstance(data.get("entries"), dict):
            return data
    except (OSError, ValueError):
        pass
    return {"schema": BUILD_SCHEMA, "entries": {}}


def _write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def _fmt_err(v) -> str:
    return "—" if v is None else f"{v:.1e}"


def _fmt_s(v) -> str:
    return "—" if v is None else f"{v:.2f}"


def _compile_cell(rec: dict, tgt: str) -> str:
    c = (rec.get("compile") or {}).get(tgt)
    if c is None:
        return "—"
    if c["status"] == OK:
        return _fmt_s(c.get("seconds"))
    return c["status"]


def render_markdown(result: BuildResult, target: str) -> str:
    lines = ["# dualcalc catalog build", "",
             f"{len(result.records)} entries, {len(result.failed)} failed, {result.cached} served from cache; "
             f"target {target}; wall time {result.wall_s:.1f} s.", "",
             "Accuracy: largest normalised error |k − k_oracle| / √(E[σ(u)²] E[σ(v)²]) against the "
             "quadrature oracle (dualcalc.verify) over the verification points; NTK the same with σ'.", "",
             "| activation | method | rule | NNGP error | NTK error | tolerance | Hermite degree | derive (s) | "
             "verify (s) | numba (s) | CUDA PTX (s) | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result.records:
        acc = r.get("accuracy") or {}
        status = r["status"] + (" (cached)" if r.get("cached") else "")
        lines.append("| " + " | ".join([
            f"`{r['name']}`" + (" (user)" if r.get("origin") == "user" else ""),
            r.get("method", "—"), f"`{r['rule']}`" if r.get("rule") else "—",
            _fmt_err(acc.get("nngp")), _fmt_err(acc.get("ntk")), _fmt_err(acc.get("tolerance")),
            str(r["hermite_degree"]) if r.get("hermite_degree") is not None else "—",
            _fmt_s(r.get("derive_s")), _fmt_s(r.get("verify_s")),
            _compile_cell(r, "numba"), _compile_cell(r, "cuda"), status]) + " |")
    problems = [(r["name"], e) for r in result.records for e in r.get("errors", [])]
    problems += [(Path(e["file"]).name, e["error"]) for e in result.file_errors]
    if problems:
        lines += ["", "## Errors", ""]
        lines += [f"* `{n}`: {e.splitlines()[0]}" for n, e in problems]
    skipped = sorted({f"{tgt}: {c.get('reason')}" for r in result.records
                      for tgt, c in (r.get("compile") or {}).items() if c.get("status") == "skipped"})
    if skipped:
        lines += ["", "## Skipped steps", ""] + [f"* {s}" for s in skipped]
    pngs = [r for r in result.records if r.get("png")]
    if pngs:
        lines += ["", "## Plots", ""] + [f"![{r['name']}]({r['png']})" for r in pngs]
    return "\n".join(lines) + "\n"


def _line(rec: dict) -> str:
    if rec["status"] == FAILED:
        return f"FAILED  {rec['name']}: " + "; ".join(e.splitlines()[0] for e in rec["errors"])
    acc = rec.get("accuracy") or {}
    word = "cached " if rec.get("cached") else "ok     "
    deg = f" degree {rec['hermite_degree']}" if rec.get("hermite_degree") is not None else ""
    extra = "" if rec.get("cached") else f"  {rec.get('total_s', 0.0):.1f} s"
    return (f"{word} {rec['name']:<18s} {rec.get('method', ''):<11s}{deg}  "
            f"error nngp {_fmt_err(acc.get('nngp'))} ntk {_fmt_err(acc.get('ntk'))}{extra}")


def build_catalog(out_dir: str | os.PathLike = DEFAULT_OUT, *, target: str = "all", jobs: int = 1,
                  only: Sequence[str] | None = None, include_user: bool = True, force: bool = False,
                  plots: bool = True, tol: float | None = None, progress: bool | None = None,
                  stream: TextIO | None = None) -> BuildResult:
    """Build the catalog into ``out_dir`` (see the module docstring); returns a :class:`BuildResult`.

    ``progress``: show a tqdm bar (None: only on a terminal).  ``stream``: where the
    per-entry lines and the summary go (default stdout).
    """
    stream = sys.stdout if stream is None else stream
    if target not in TARGETS:
        raise BackendError(f"--target must be one of {', '.join(TARGETS)}, got {target!r}")
    if int(jobs) != jobs or jobs < 1:
        raise DualcalcError(f"--jobs must be a positive integer, got {jobs!r}")
    t_start = time.perf_counter()
    if target == "cuda":  # asked for explicitly: a missing compiler is an error, not a skip
        fn, why = cuda_compiler()
        if fn is None:
            raise BackendError(f"--target cuda: {why}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan = collect(include_user=include_user, only=only)
    if plots and importlib.util.find_spec("matplotlib") is None:  # a lean install: the plots extra is optional
        plots = False
        plan.notes.append("plots skipped: matplotlib is not installed (pip install 'dualcalc[plots]'); "
                          "everything else is built")
    settings = {"plots": bool(plots), "tol": tol, "W": NET_W_STD, "b": NET_B_STD}
    fp = library_fingerprint()
    jobs_all = [Job(j.name, j.text, j.origin, j.path, entry_key(j, target, fp, settings)) for j in plan.jobs]
    manifest_path = out / "manifest.json"
    manifest = _load_manifest(manifest_path)
    old = manifest["entries"]

    records: dict[str, dict] = {}
    todo: list[Job] = []
    for j in jobs_all:
        prev = old.get(j.name)
        png_ok = not plots or (prev is not None and prev.get("png") and (out / prev["png"]).is_file())
        if not force and prev is not None and prev.get("key") == j.key and prev.get("status") == OK and png_ok:
            records[j.name] = dict(prev, cached=True)
        else:
            todo.append(j)
    cached = len(records)

    for note in plan.notes:
        print(f"note    {note}", file=stream)
    for e in plan.errors:
        msg = e["error"]
        prefix = Path(e["file"]).name + ": "
        msg = msg[len(prefix):] if msg.startswith(prefix) else msg
        print(f"FAILED  {e['origin']} catalog file {e['file']}: {msg}", file=stream)
    for name in sorted(records):
        print(_line(records[name]), file=stream)

    def finished(rec: dict) -> None:
        rec["cached"] = False
        records[rec["name"]] = rec
        manifest["entries"][rec["name"]] = {k: v for k, v in rec.items() if k != "cached"}
        _write_json(manifest_path, manifest)  # progress survives an interrupted build

    if todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="catalog build", unit="entry", file=sys.stderr,
                   disable=(None if progress is None else not progress), leave=False)
        try:
            if jobs == 1 or len(todo) == 1:
                for j in todo:
                    bar.set_postfix_str(j.name)
                    rec = _build_one_safe(j, str(out), target, plots, tol)
                    finished(rec)
                    bar.write(_line(rec), file=stream)
                    bar.update()
            else:
                import multiprocessing

                ctx = multiprocessing.get_context("spawn")  # no fork of a threaded parent (numba, tqdm)
                with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=ctx) as pool:
                    futs = {pool.submit(_build_one_safe, j, str(out), target, plots, tol): j for j in todo}
                    for fut in as_completed(futs):
                        j = futs[fut]
                        try:
                            rec = fut.result()
                        except Exception as exc:  # noqa: BLE001 - a crashed worker
                            rec = {"name": j.name, "origin": j.origin, "file": j.path, "key": j.key,
                                   "status": FAILED, "errors": [_err("worker", exc)]}
                        finished(rec)
                        bar.write(_line(rec), file=stream)
                        bar.update()
        finally:
            bar.close()

    manifest["library"] = fp
    _write_json(manifest_path, manifest)
    ordered = [records[j.name] for j in jobs_all]
    result = BuildResult(ordered, plan.errors, out, cached, time.perf_counter() - t_start, plan.notes)
    report = {
        "schema": BUILD_SCHEMA, "target": target, "wall_s": result.wall_s, "entries": len(ordered),
        "failed": len(result.failed) + len(plan.errors), "cached": cached,
        "verify_points": _verify_points(), "records": ordered, "file_errors": plan.errors,
    }
    _write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render_markdown(result, target))
    nfail = len(result.failed) + len(plan.errors)
    print(f"{len(ordered) - len(result.failed)} of {len(ordered)} entries built and verified"
          f"{f', {nfail} failed' if nfail else ''}; {cached} of {len(ordered)} served from cache; "
          f"{result.wall_s:.1f} s. Report: {out / 'report.md'}", file=stream)
    return result


def _verify_points() -> list[list[float]]:
    from .verify import VERIFY_POINTS

    return [list(p) for p in VERIFY_POINTS]
