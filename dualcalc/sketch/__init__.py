"""Sketches: NNGP/NTK random features for any activation in time linear in n (docs/math.md §4).

* :mod:`~dualcalc.sketch.srht` — SRHT, TensorSRHT, CountSketch, real output features
* :mod:`~dualcalc.sketch.polysketch` — PolySketch (Ahle et al.), all degrees from one tree
* :class:`KernelSketch` — scikit-learn transformer, Z Zᵀ ≈ net.kernel(X).ntk (or .nngp)
* :mod:`~dualcalc.sketch.homogeneous` — subspace embedding of homogeneous NNGP/NTK
* :class:`SketchRidge` — ridge regression/classification on sketched features, O(n·m²)
"""
from .kernel_sketch import KernelSketch
from .polysketch import PolySketch
from .ridge import SketchRidge
from .srht import SRHT, CountSketch, TensorSRHT, to_real

__all__ = ["KernelSketch", "SketchRidge", "PolySketch", "SRHT", "TensorSRHT", "CountSketch", "to_real"]
