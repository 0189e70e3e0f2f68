"""How long the derivation engine takes: cold per catalog entry, the whole catalog cold, and
cache hits.  Prints Markdown tables.

    python benchmarks/derive_times.py [--extra] [--json out.json]

"Derive" is the time to a ready dual: ``activation(name).dual`` — recognition / symbolic
rules / numerical self-check for closed forms; for the Hermite method the degree that meets
the tolerance over the stated variance range and its error estimate (``dual.degree``).
"First value" adds the first ``nngp`` and ``ntk`` evaluation (lambdify, coefficient tables).

* cold: a fresh process with an empty disk cache (DUALCALC_CACHE_DIR set to a new folder),
  entries one after the other (SymPy's in-memory caches warm up along the way, as in a
  ``dualcalc catalog build``);
* cache hit: a second fresh process on the now-filled cache: ``activation(name).dual`` (what
  a user waits for; catalog entries with a closed form in their file do not use the cache), and
  ``derive()`` of the formula alone (for the Hermite method: the cached "no closed form").
Targets (issue 3): cold < 2 s median per entry, whole catalog < 60 s, cache hit < 50 ms.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

EXTRA = ["He(4,x) + 0.5*x**3 - 1", "sin(2*x) + cos(x)", "x*exp(-x**2)", "cosh(x/2) - sinh(x/3)", "cos(x**2)",
         "He(3,x)*exp(-x**2/4)", "sin(x)*cos(2*x)*exp(-x**2/8)", "max(x,0)**2 + x",
         "where(x>0, x**3, 0.5*x**2 - x)", "step(x) + 0.5*x", "abs(x)**3 - 2*max(x,0)", "erf(3*x) + 0.5*x",
         "x*erf(x) + exp(-x**2)", "x**2*erf(x/2)", "erfc(x) - x/2", "x*Phi(2*x) + x", "2*max(3*x, 0) + 1",
         "3*x*Phi(x) - 2", "x*tanh(x)"]


def _child(mode: str, names: list[str]) -> None:
    import warnings

    warnings.simplefilter("ignore")
    t_import = time.perf_counter()
    import dualcalc as dc
    from dualcalc.derive.engine import derive
    t_import = time.perf_counter() - t_import
    rows = []
    t_all = time.perf_counter()
    for name in names:
        row = {"name": name}
        try:
            if mode == "cold":
                t = time.perf_counter()
                act = dc.activation(name)
                d = act.dual
                _ = d.degree
                row["derive"] = time.perf_counter() - t
                act.nngp(0.7, 1.9, 0.55)
                act.ntk(0.7, 1.9, 0.55)
                row["first"] = time.perf_counter() - t
                row["method"], row["rule"] = d.method, d.rule
                row["degree"] = d.degree
                row["error"] = d.error_estimate
            else:
                t = time.perf_counter()
                act = dc.activation(name)
                _ = act.dual
                row["hit"] = time.perf_counter() - t
                if act.entry is None or act.entry.nngp is None:  # entries with a [dual] formula skip derive()
                    t = time.perf_counter()
                    derive(act.expr, timeout=act.timeout)
                    row["derive_hit"] = time.perf_counter() - t
        except Exception as err:  # noqa: BLE001 - a benchmark reports, it does not stop
            row["error_text"] = f"{type(err).__name__}: {err}"
        rows.append(row)
    json.dump({"rows": rows, "total": time.perf_counter() - t_all, "import": t_import}, sys.stdout)


def _run(mode: str, names: list[str], cache: str) -> dict:
    env = dict(os.environ, DUALCALC_CACHE_DIR=cache)
    out = subprocess.run([sys.executable, __file__, "--child", mode, *names], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--extra", action="store_true", help="also time out-of-catalog formulas")
    ap.add_argument("--json", help="write the raw timings here")
    args = ap.parse_args()
    if args.child:
        _child(args.child[0], args.child[1:])
        return
    from dualcalc.catalog import REGISTRY

    names = sorted(REGISTRY.all())
    groups = [("catalog", names)] + ([("out-of-catalog formulas", EXTRA)] if args.extra else [])
    report = {}
    for label, items in groups:
        with tempfile.TemporaryDirectory() as cache:
            cold = _run("cold", items, cache)
            hit = _run("hit", items, cache)
        report[label] = {"cold": cold, "hit": hit}
        print(f"\n### {label}: {len(items)} entries\n")
        print("| entry | method | rule | derive cold (s) | + first values (s) | `.dual` hit (ms) | `derive()` hit (ms) "
              "| degree | error est. |")
        print("|---|---|---|---:|---:|---:|---:|---:|---:|")
        for rc, rh in zip(cold["rows"], hit["rows"]):
            if "error_text" in rc:
                print(f"| `{rc['name']}` | refused | {rc['error_text'][:60]} | | | | | | |")
                continue
            print(f"| `{rc['name']}` | {rc['method']} | {rc['rule']} | {rc['derive']:.2f} | {rc['first']:.2f} | "
                  f"{1000 * rh.get('hit', float('nan')):.1f} | "
                  f"{'%.1f' % (1000 * rh['derive_hit']) if 'derive_hit' in rh else 'n/a'} | "
                  f"{rc['degree'] if rc['degree'] is not None else ''} | "
                  f"{rc['error']:.1e} |")
        ok = [r for r in cold["rows"] if "derive" in r]
        hits = [r["hit"] for r in hit["rows"] if "hit" in r]
        dhits = [r["derive_hit"] for r in hit["rows"] if "derive_hit" in r]
        d = [r["derive"] for r in ok]
        print(f"\n| summary | value |\n|---|---:|")
        print(f"| median derive, cold (s) | {statistics.median(d):.2f} |")
        print(f"| max derive, cold (s) | {max(d):.2f} |")
        print(f"| whole set cold, one process (s) | {cold['total']:.1f} |")
        print(f"| (import of dualcalc, not included) (s) | {cold['import']:.2f} |")
        print(f"| median `.dual` on a warm cache (ms) | {1000 * statistics.median(hits):.1f} |")
        print(f"| max `.dual` on a warm cache (ms) | {1000 * max(hits):.1f} |")
        print(f"| median `derive()` cache hit (ms) | {1000 * statistics.median(dhits):.1f} |")
        print(f"| max `derive()` cache hit (ms) | {1000 * max(dhits):.1f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)


if __name__ == "__main__":
    main()
