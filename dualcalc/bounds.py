"""Bounds checked before any work starts: float64 range of layer parameters, and memory.

A leaf module (imports nothing of dualcalc but the errors), so layers, kernels and sketches
can all refuse an impossible request with a specific error instead of an OverflowError or a
MemoryError from deep inside NumPy.
"""
from __future__ import annotations

import math
import os
import sys

from .errors import OutOfMemoryError

#: Largest weight/bias standard deviation whose square (the variance every recursion uses)
#: is still a finite float64: √(1.8e308) ≈ 1.34e154.
MAX_STD = math.sqrt(sys.float_info.max)


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or the
    physical memory where that is not known; None when neither can be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} PiB"  # pragma: no cover - the loop always returns


def check_allocation(nbytes: float, what: str, hint: str = "") -> None:
    """Raise :class:`~dualcalc.errors.OutOfMemoryError` when ``nbytes`` exceed the memory
    available now, naming what would be allocated, how much it needs, and ``hint``."""
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise OutOfMemoryError(f"{what} would need {format_bytes(nbytes)}, but only {format_bytes(avail)} of memory "
                               f"is available" + (f"; {hint}" if hint else ""))


def check_output_memory(n1: int, n2: int, get, dtype, out=None, temporaries: int = 0) -> None:
    """Before a kernel allocates its (n1, n2) outputs (those not given in ``out``): refuse
    with the memory it would need when that is more than the machine has. ``temporaries``
    counts further (n1, n2) float64 arrays the backend holds (the NumPy reference)."""
    import numpy as np

    given = tuple(out) if out is not None else (None, None)  # out = (nngp array, ntk array)
    slot = {"nngp": 0, "ntk": 1}
    fresh = sum(1 for g in get if slot.get(g, 0) >= len(given) or given[slot.get(g, 0)] is None)
    nbytes = (fresh * np.dtype(dtype).itemsize + temporaries * 8) * float(n1) * float(n2)
    check_allocation(nbytes, f"the kernel matrices ({fresh} output(s) of {n1} × {n2} {np.dtype(dtype).name}"
                     + (f" and {temporaries} temporaries" if temporaries else "") + ")",
                     hint="pass block_size and preallocated or memory-mapped out=(K, T) arrays (np.memmap), "
                          "give Dask arrays, or use dc.KernelSketch for features in memory linear in n")
