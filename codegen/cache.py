r"""Content-hash cache of generated source and compiled artifacts.

Folder: :func:`dualcalc.fileio.cache_dir` (``$DUALCALC_CACHE_DIR``, else the user cache
folder, ``~/.cache/dualcalc`` on Linux), one subfolder per target.  A generated module is
stored as ``<target>/dc_<target>_<hash>.py`` where the hash covers the source text (and,
for :func:`content_hash`, the library and generator versions); it is written once,
atomically (temporary file in the same folder + ``os.replace``), so a reader sees
either nothing or the whole file, and it is never rewritten — which keeps Numba's
on-disk cache (``__pycache__`` beside the module, keyed by the file's path and
time stamp) valid across processes.  CUDA PTX is cached the same way.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import threading
from pathlib import Path
from types import ModuleType

from dualcalc._version import __version__
from dualcalc.fileio import atomic_write_bytes, atomic_write_text, cache_dir
from dualcalc.warn import warn

_LOCK = threading.Lock()
_MODULES: dict[str, ModuleType] = {}
STATS = {"generated": 0, "written": 0, "reused_file": 0, "imported": 0, "memory_hits": 0}


def library_version() -> str:
    return __version__


def content_hash(*parts: str) -> str:
    """SHA-256 (hex, 24 characters) of the parts and the library version."""
    h = hashlib.sha256()
    for p in (library_version(), *parts):
        h.update(p.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:24]


def write_once(path: Path, text: str) -> bool:
    """Write ``text`` atomically unless the file already holds exactly it. True if written."""
    try:
        if path.read_text(encoding="utf-8") == text:
            STATS["reused_file"] += 1
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    atomic_write_text(path, text)
    STATS["written"] += 1
    return True


def write_bytes_once(path: Path, data: bytes) -> None:
    if path.exists():
        return
    atomic_write_bytes(path, data)


def load_module(target: str, digest: str, text: str) -> ModuleType:
    """Import the generated module ``dc_<target>_<digest>`` from ``cache_dir()/<target>``
    (written once if needed; a private temporary folder, with a warning, when the cache folder
    is not writable).  Every generated Python module (fully connected, convolutional, sketch
    weighting) is loaded through here, so the in-process table and the fallback exist once."""
    name = f"dc_{target}_{digest}"
    with _LOCK:
        mod = _MODULES.get(name)
        if mod is not None:
            STATS["memory_hits"] += 1
            return mod
        path = cache_dir() / target / f"{name}.py"
        try:
            write_once(path, text)
        except OSError as err:  # read-only home, full disk: a private temporary folder still works
            import tempfile

            path = Path(tempfile.gettempdir()) / f"dualcalc-cache-{os.getuid()}" / target / f"{name}.py"
            warn(f"dualcalc: cannot write the cache folder {cache_dir()} ({err}); generated code goes to "
                 f"{path.parent} for this process (set DUALCALC_CACHE_DIR to a writable folder)", RuntimeWarning,
                 key=("cache-folder", str(cache_dir())))
            write_once(path, text)
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        _MODULES[name] = mod
        STATS["imported"] += 1
        return mod


def info() -> dict:
    return {"folder": str(cache_dir()), "modules_loaded": len(_MODULES), **STATS}


#: What a fully connected program's generated text says it computes (both targets print it).
RECURSION_LINES = (
    "recursion (neural-tangents conventions, docs/math.md §3):",
    "  input      K = <x, y>/d, Θ = 0",
    "  Dense      K <- W²·K + b²,  Θ <- W²·Θ + K   (standard: Θ <- width·K_old + W²·Θ + 1)",
    "  activation K <- k(q_x, q_y, K),  Θ <- Θ·kdot(q_x, q_y, K);  q_x = K(x, x) per point",
    "  LayerNorm  K, Θ <- K, Θ / sqrt((q_x + eps)(q_y + eps));  FanInSum: sums;  FanInProd:",
    "             K <- prod K_i, Θ <- sum_i Θ_i prod_(j != i) K_j  (a branch: a register read twice)",
)


def banner(comment: str, title: str, description: str, get, generator: str, extra=()) -> list[str]:
    """The header of a generated fully connected kernel: what it is, the network, the outputs,
    the recursion, and the library and generator versions (part of the text, so of its hash)."""
    outs = ", ".join(n for n in ("nngp", "ntk") if n in get)
    rule = comment + " " + "-" * 94
    lines = [title, f"network : {description}", f"outputs : {outs}", *RECURSION_LINES, *extra,
             f"dualcalc {library_version()}, generator {generator}"]
    return [rule] + [f"{comment} {line}" for line in lines] + [rule]
