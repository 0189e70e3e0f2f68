r"""Named architectures built from the layers: :func:`myrtle` (Myrtle-5/7/10 of Shankar et al.,
2020, exactly as the neural-tangents Myrtle example and the CNTK-sketch paper's code lay it out).
"""
from __future__ import annotations

import numpy as np

from .conv import AvgPool, Conv, Flatten
from .errors import ParameterError
from .layers import Dense
from .network import serial


MYRTLE_STAGES = {5: (2, 1, 1), 7: (2, 2, 2), 10: (3, 3, 3)}


def myrtle(depth: int = 5, activation="relu", *, W_std: float = float(np.sqrt(2.0)), b_std: float = 0.0):
    """The Myrtle-d network (d = 5, 7, 10) as in neural-tangents' Myrtle example:

    ``[Conv(3×3, SAME), act] × s1, AvgPool(2), [Conv, act] × s2, AvgPool(2), [Conv, act] × s3,
    AvgPool(2) × 3, Flatten, Dense`` with (s1, s2, s3) = {5: (2,1,1), 7: (2,2,2), 10: (3,3,3)},
    W_std = √2, b_std = 0.  For 32×32 inputs the five poolings reduce the image to 1×1.
    """
    if depth not in MYRTLE_STAGES:
        raise ParameterError(f"Myrtle depth must be one of {sorted(MYRTLE_STAGES)}, got {depth!r}")
    s1, s2, s3 = MYRTLE_STAGES[depth]

    def block(k):
        return [Conv(W_std, b_std, (3, 3), "SAME"), activation] * k

    layers = block(s1) + [AvgPool((2, 2))] + block(s2) + [AvgPool((2, 2))] + block(s3)
    layers += [AvgPool((2, 2))] * 3 + [Flatten(), Dense(W_std, b_std)]
    return serial(*layers)
