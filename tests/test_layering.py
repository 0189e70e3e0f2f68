"""The import graph of dualcalc/ and codegen/ has no cycles, imports inside functions included.

Each module of the two packages is parsed with ``ast`` (nothing is imported). An edge A -> B
is every ``import B`` / ``from B import x`` anywhere in A (module level, functions, branches),
relative imports resolved; ``from P import x`` is an edge to the submodule ``P.x`` when that
module exists, else to ``P`` itself (its ``__init__``). A module reached only through a parent
package (``import a.b.c`` running ``a/__init__``) is not an edge: a package's ``__init__``
counts where it is named.

``ALLOWED`` is empty: the network program (IR) of issue 13 removed the last cycles (Network
dispatches to the runtime, which reads the program, never the network; the NumPy references
sit below the emitters).  The test also fails when an entry no longer exists or is no longer
needed to break a cycle, so the list can only shrink.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dualcalc", "codegen")

#: Edges allowed to close a cycle: none (issue 13 removed the last five). Keep it empty.
ALLOWED = frozenset()


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            if is_pkg:
                parts.pop()
            mods[".".join(parts)] = (path, is_pkg)
    return mods


def _known(name: str, mods) -> str | None:
    """The longest prefix of ``name`` that is one of our modules (None: a third-party import)."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, (path, is_pkg) in mods.items():
        package = mod if is_pkg else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [_known(a.name, mods) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    base = ".".join(base + ([node.module] if node.module else []))
                else:
                    base = node.module
                for a in node.names:
                    full = f"{base}.{a.name}"
                    targets.append(full if full in mods else _known(base, mods))
            graph[mod].update(t for t in targets if t is not None and t != mod)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_cycle_finder_on_a_known_graph():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert sorted(cycles(g)) == [["a", "b", "c"], ["d", "e"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_function_level_and_relative_imports():
    g = import_graph()
    assert "dualcalc.fileio" in g["codegen.cache"]  # module level, absolute
    assert "dualcalc.hermite" in g["dualcalc.activation"]  # "from . import hermite"
    assert "codegen.sketch_numba" in g["dualcalc.sketch.weighting"]  # inside a function


def test_no_import_cycles_beyond_the_allowed_edges():
    g = import_graph()
    pruned = {m: {t for t in ts if (m, t) not in ALLOWED} for m, ts in g.items()}
    assert cycles(pruned) == [], "import cycle(s) among dualcalc/ and codegen/ modules"


def test_allowed_edges_are_not_stale():
    g = import_graph()
    gone = sorted(e for e in ALLOWED if e[1] not in g.get(e[0], ()))
    assert not gone, f"remove from ALLOWED (the import is gone): {gone}"
    unneeded = []
    for edge in sorted(ALLOWED):
        rest = ALLOWED - {edge}
        if not cycles({m: {t for t in ts if (m, t) not in rest} for m, ts in g.items()}):
            unneeded.append(edge)
    assert not unneeded, f"remove from ALLOWED (no cycle needs it any more): {unneeded}"


def test_leaf_modules_import_nothing_of_ours():
    g = import_graph()
    for leaf in ("dualcalc._version", "dualcalc.errors", "dualcalc.fileio", "dualcalc.symbols"):
        assert g[leaf] == set(), (leaf, g[leaf])


#: What codegen may read of dualcalc: the programs, the duals' data, symbols, errors, files, and
#: the NumPy self pass of images (the per-pixel plan of Hermite networks) -- never the layer
#: classes (dualcalc.layers, .network, .conv, .activation) or the runtime that calls codegen.
CODEGEN_READS = frozenset({"dualcalc._version", "dualcalc.bvn", "dualcalc.conv_reference", "dualcalc.dual",
                           "dualcalc.errors", "dualcalc.fileio", "dualcalc.program", "dualcalc.symbols",
                           "dualcalc.warn"})


def test_codegen_reads_only_the_program():
    g = import_graph()
    bad = sorted((m, t) for m, ts in g.items() if m.startswith("codegen") for t in ts
                 if t.startswith("dualcalc") and t not in CODEGEN_READS)
    assert not bad, f"codegen imports beyond the program and its data: {bad}"
