"""Generated CUDA C for the exact CNNGP/CNTK of convolutional networks (placeholder)."""
from __future__ import annotations


def cuda_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False
