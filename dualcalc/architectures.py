r"""Named architectures built from the layers: :func:`myrtle` (Myrtle-5/7/10 of Shankar et al.,
2020, exactly as the neural-tangents Myrtle example and the CNTK-sketch paper's code lay it out)
and :func:`wide_resnet` (the infinite WideResNet of neural-tangents' README).
"""
from __future__ import annotations

import numpy as np

from .conv import AvgPool, Conv, Flatten
from .errors import ParameterError
from .layers import Dense, FanInSum, FanOut, Identity
from .network import parallel, serial


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


def _wide_resnet_block(act, W_std, b_std, strides, conv_shortcut: bool):
    main = serial(act, Conv(W_std, b_std, (3, 3), "SAME", strides), act, Conv(W_std, b_std, (3, 3), "SAME"))
    shortcut = Conv(W_std, b_std, (3, 3), "SAME", strides) if conv_shortcut else Identity()
    return serial(FanOut(2), parallel(main, shortcut), FanInSum())


def wide_resnet(block_size: int, k: float = 1, num_classes: int = 1, activation="relu", *,
                W_std: float = 1.0, b_std: float = 0.0, pool_window=(8, 8)):
    """The infinite WideResNet of neural-tangents' README (``WideResnet(block_size, k, num_classes)``):

    ``Conv(3×3, SAME)``, then three groups of ``block_size`` residual blocks (16k, 32k, 64k
    channels — infinitely many here, so k and num_classes do not change the kernel) at strides
    1, 2, 2, ``AvgPool(pool_window)`` (stride 1, VALID), ``Flatten``, ``Dense``.  A block is
    ``FanOut(2), parallel(serial(act, Conv(3×3, strides), act, Conv(3×3)), shortcut), FanInSum``;
    the first block of every group has the shortcut ``Conv(3×3, strides)`` (the README's
    ``channel_mismatch=True``), the others ``Identity()``.  Every Conv and the Dense take
    ``W_std``/``b_std`` (the README's 1.0 and no bias; b_std=0 is the same kernel).  For 32×32
    images the groups end at 8×8 and the (8, 8) pool leaves one pixel; for smaller images pass
    ``pool_window`` = a quarter of the image size (e.g. (2, 2) at 8×8).
    """
    for name, v in (("block_size", block_size), ("num_classes", num_classes)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise ParameterError(f"wide_resnet {name} must be a positive integer, got {v!r}")
    if isinstance(k, bool) or not isinstance(k, int | float | np.integer | np.floating) or not k > 0 \
            or int(16 * k) < 1:
        raise ParameterError(f"wide_resnet k (the widening factor) must be a positive number, got {k!r}")
    groups = []
    for strides in ((1, 1), (2, 2), (2, 2)):
        groups.append(_wide_resnet_block(activation, W_std, b_std, strides, True))
        groups += [_wide_resnet_block(activation, W_std, b_std, (1, 1), False) for _ in range(int(block_size) - 1)]
    return serial(Conv(W_std, b_std, (3, 3), "SAME"), *groups, AvgPool(pool_window, strides=(1, 1)), Flatten(),
                  Dense(W_std, b_std))
