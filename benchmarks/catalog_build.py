"""Wall and CPU time of `dualcalc catalog build` over the shipped catalog, cold and warm.

    python benchmarks/catalog_build.py            # --jobs 2, the whole catalog
    python benchmarks/catalog_build.py --jobs 1 --only relu gelu tanh

Cold: fresh, empty folders for dualcalc's cache (derived duals, generated modules), Numba's
cache (NUMBA_CACHE_DIR: no compiled machine code of the library or of earlier builds is
reused), the build folder and the user catalog, as after a fresh install.  Warm: the same
command again with the same folders (every entry served from the build's manifest).  Each
build runs as a subprocess, so its CPU time is the children's user + system time.

Writes benchmarks/results/catalog_build.md and catalog_build.json.  Targets (issue 7):
under 2 minutes cold on 2 cores, under 10 s warm.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_build(env: dict, out: Path, args) -> dict:
    cmd = [sys.executable, "-m", "dualcalc.cli", "catalog", "build", "--jobs", str(args.jobs), "--out", str(out)]
    if args.only:
        cmd += ["--only", *args.only]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    last = ([line for line in proc.stdout.splitlines() if line.strip()][-1:] or [""])[0]
    summary = last.split(" Report:")[0]  # the report's path is a temporary folder of this run
    return {"wall_s": wall, "cpu_s": cpu, "exit": proc.returncode, "summary": summary,
            "peak_rss_mb": after.ru_maxrss / 1024, "stderr_tail": proc.stderr[-2000:] if proc.returncode else ""}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", nargs="*", help="entry names (default: the whole catalog)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folders")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="dualcalc-catalog-build-"))
    env = dict(os.environ, DUALCALC_CACHE_DIR=str(tmp / "cache"), NUMBA_CACHE_DIR=str(tmp / "numba"),
               DUALCALC_CATALOG_DIR=str(tmp / "user_catalog"))
    (tmp / "user_catalog").mkdir()
    out = tmp / "build"
    load = os.getloadavg()[0]
    try:
        cold = timed_build(env, out, args)
        warm = timed_build(env, out, args)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    res = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "load_before": load,
           "argv": " ".join(argv if argv is not None else sys.argv[1:]), "jobs": args.jobs, "cold": cold, "warm": warm}
    for name, r in (("cold", cold), ("warm", warm)):
        print(f"{name}: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU, exit {r['exit']}: {r['summary']}")
        if r["exit"]:
            print(r["stderr_tail"], file=sys.stderr)
    d = ROOT / "benchmarks" / "results"
    d.mkdir(parents=True, exist_ok=True)
    (d / "catalog_build.json").write_text(json.dumps(res, indent=2))
    lines = ["# `dualcalc catalog build`: cold and warm", "",
             f"{res['date']}, {res['machine']}, load average {load:.2f} before the run, "
             f"`python benchmarks/catalog_build.py {res['argv']}`", "",
             "| run | wall | CPU (user + system) | peak RSS (largest process) | result |", "|---|---|---|---|---|"]
    for name, r in (("cold (empty caches)", cold), ("warm (same folders)", warm)):
        rss = f"{r['peak_rss_mb']:.0f} MB" if r is cold else "—"  # getrusage: the largest child so far
        lines.append(f"| {name} | {r['wall_s']:.1f} s | {r['cpu_s']:.1f} s | {rss} | exit {r['exit']}: {r['summary']} |")
    lines += ["", "Targets: under 2 minutes cold on 2 cores, under 10 s warm."]
    (d / "catalog_build.md").write_text("\n".join(lines) + "\n")
    print(f"written: {d / 'catalog_build.md'}")
    return 0 if cold["exit"] == 0 and warm["exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
