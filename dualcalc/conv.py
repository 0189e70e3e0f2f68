r"""Convolutional layers of infinite width (neural-tangents conventions, images NHWC).

Use them in :func:`dualcalc.serial` beside :class:`~dualcalc.network.Dense` and the
activations.  For an image pair (x, y) the state of the recursion is the pixel-pair
covariance K[i, j] (pixel i of x, pixel j of y) and the NTK Θ[i, j] (docs/math.md §3):

* input:       K[i, j] = ⟨x_i, y_j⟩ / C (C channels), Θ = 0
* Conv f×f:    K[i, j] ← W²/(fh·fw) · Σ_δ K[i+δ, j+δ] + b²,  Θ ← W²/(fh·fw) · Σ_δ Θ[i+δ, j+δ] + K_new
               ("SAME": zero padding, δ from −⌊(f−1)/2⌋ to ⌈(f−1)/2⌉ as in XLA; "VALID": no padding)
* activation:  per pixel pair, with the variances q_x(i) = K_xx[i, i] and q_y(j) = K_yy[j, j]
* AvgPool(w):  stride = window, no padding: average over the window pairs
* GlobalAvgPool: mean over all pixel pairs;  Flatten: mean of the pixel diagonal K[i, i]
  (neural-tangents' Flatten of infinitely many channels); after either, the state is a number
* Dense on an image acts on the channels of every pixel: K ← W² K + b², Θ ← W² Θ + K_new.

:func:`dualcalc.architectures.myrtle` builds the Myrtle-5/7/10 networks from these layers.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .bounds import MAX_STD
from .errors import InputError, ParameterError
from .program import ImageOp as Op, ImageProgram  # noqa: F401 - re-exported (the image program)


def _std(v, name: str, layer: str) -> float:
    if not isinstance(v, int | float | np.floating | np.integer) or isinstance(v, bool) or not np.isfinite(v) or v < 0:
        raise ParameterError(f"{layer} {name} must be a finite non-negative number, got {v!r}")
    if float(v) > MAX_STD:
        raise ParameterError(f"{layer} {name}={v!r}: its square, the variance the kernel uses, overflows "
                             f"float64 (largest usable value {MAX_STD:.3g})")
    return float(v)


def _pair(v, name: str, layer: str) -> tuple[int, int]:
    if isinstance(v, int | np.integer) and not isinstance(v, bool):
        v = (int(v), int(v))
    try:
        t = tuple(v)
    except TypeError:
        raise ParameterError(f"{layer} {name} must be a pair of positive integers, got {v!r}") from None
    if len(t) != 2 or not all(isinstance(e, int | np.integer) and not isinstance(e, bool) and e >= 1 for e in t):
        raise ParameterError(f"{layer} {name} must be a pair of positive integers (height, width), got {v!r}")
    return int(t[0]), int(t[1])


@dataclass(frozen=True)
class Conv:
    """2-D convolution of infinitely many channels, stride 1 (NTK parameterization).

    ``Conv(W_std, b_std, filter_shape=(3, 3), padding="SAME")``; padding "SAME" (zero
    padding, output size = input size) or "VALID" (output shrinks by filter − 1).
    """

    W_std: float = 1.0
    b_std: float = 0.0
    filter_shape: tuple[int, int] = (3, 3)
    padding: str = "SAME"
    is_layer: ClassVar[bool] = True
    kind: ClassVar[str] = "conv"

    def __post_init__(self):
        object.__setattr__(self, "W_std", _std(self.W_std, "W_std", "Conv"))
        object.__setattr__(self, "b_std", _std(self.b_std, "b_std", "Conv"))
        object.__setattr__(self, "filter_shape", _pair(self.filter_shape, "filter_shape", "Conv"))
        pad = self.padding.upper() if isinstance(self.padding, str) else self.padding
        if pad not in ("SAME", "VALID"):
            raise ParameterError(f"Conv padding must be 'SAME' or 'VALID', got {self.padding!r}")
        object.__setattr__(self, "padding", pad)


@dataclass(frozen=True)
class AvgPool:
    """Average pooling over ``window`` = (height, width) with stride = window, no padding
    (trailing rows/columns that do not fill a window are dropped, as "VALID")."""

    window: tuple[int, int] = (2, 2)
    strides: tuple[int, int] | None = None
    is_layer: ClassVar[bool] = True
    kind: ClassVar[str] = "pool"

    def __post_init__(self):
        w = _pair(self.window, "window", "AvgPool")
        object.__setattr__(self, "window", w)
        if self.strides is not None and _pair(self.strides, "strides", "AvgPool") != w:
            raise ParameterError(f"AvgPool supports stride = window only; got window {w}, strides {self.strides!r}")
        object.__setattr__(self, "strides", w)


@dataclass(frozen=True)
class GlobalAvgPool:
    """Average over all pixels: the kernel becomes the mean over all pixel pairs."""

    is_layer: ClassVar[bool] = True
    kind: ClassVar[str] = "gap"


@dataclass(frozen=True)
class Flatten:
    """Flatten the image (infinitely many channels): the kernel becomes the mean of the
    pixel diagonal, K ← mean_i K[i, i], as neural-tangents' ``stax.Flatten``."""

    is_layer: ClassVar[bool] = True
    kind: ClassVar[str] = "flatten"


CONV_KINDS = ("conv", "pool", "gap", "flatten")

#: Conv+activation blocks per stage of Myrtle-d (Shankar et al. 2020; neural-tangents example).
def layer_kind(layer) -> str:
    """"conv", "pool", "gap", "flatten", "dense" or "act" (anything else: "other")."""
    from .activation import Activation
    from .layers import Dense

    if isinstance(layer, Dense):
        return "dense"
    if isinstance(layer, Activation):
        return "act"
    return getattr(layer, "kind", "other") if getattr(layer, "is_layer", False) is True else "other"


def is_conv_network(net) -> bool:
    """True when the network holds a convolution-type layer (Conv, AvgPool, GlobalAvgPool, Flatten)."""
    return any(layer_kind(l) in CONV_KINDS for l in getattr(net, "layers", ()))


# ---------------------------------------------------------------------------------------------
# The layer program for images (its operations: dualcalc.program.ImageOp): what the reference
# recursion and the emitters read.
def image_program(net, input_shape: Sequence[int]) -> ImageProgram:
    """Check the network against images of shape (H, W, C) and lay out its recursion."""
    if len(input_shape) != 3:
        raise InputError(f"images must be NHWC (4-D); got per-image shape {tuple(input_shape)}")
    H, W, C = (int(s) for s in input_shape)
    h, w = H, W
    ops: list[Op] = []
    seen_linear = False
    for i, layer in enumerate(net.layers):
        kind = layer_kind(layer)
        if kind == "other":
            raise ParameterError(f"layer {i} ({layer!r}) is not supported in a convolutional network")
        spatial = h > 0
        if kind == "conv":
            if not spatial:
                raise ParameterError(f"layer {i}: Conv after Flatten/GlobalAvgPool (the image is gone)")
            fh, fw = layer.filter_shape
            if layer.padding == "SAME":
                ph, pw = (fh - 1) // 2, (fw - 1) // 2
                ho, wo = h, w
            else:
                ph = pw = 0
                ho, wo = h - fh + 1, w - fw + 1
                if ho < 1 or wo < 1:
                    raise ParameterError(f"layer {i}: VALID {fh}×{fw} convolution of a {h}×{w} image leaves nothing")
            ops.append(Op("conv", h, w, ho, wo, w2=layer.W_std ** 2, b2=layer.b_std ** 2, fh=fh, fw=fw, ph=ph, pw=pw))
            h, w = ho, wo
            seen_linear = True
        elif kind == "dense":
            if getattr(layer, "parameterization", "ntk") != "ntk":
                raise ParameterError(f"layer {i}: convolutional networks support the NTK parameterization only")
            ops.append(Op("dense", h, w, h, w, w2=float(layer.W_std) ** 2, b2=float(layer.b_std) ** 2))
            seen_linear = True
        elif kind == "act":
            if not seen_linear:
                raise ParameterError(f"layer {i}: an activation needs a Conv or Dense layer before it")
            ops.append(Op("act", h, w, h, w, act=layer))
        elif kind == "pool":
            if not spatial:
                raise ParameterError(f"layer {i}: AvgPool after Flatten/GlobalAvgPool (the image is gone)")
            fh, fw = layer.window
            ho, wo = h // fh, w // fw
            if ho < 1 or wo < 1:
                raise ParameterError(f"layer {i}: AvgPool {fh}×{fw} of a {h}×{w} image leaves nothing")
            ops.append(Op("pool", h, w, ho, wo, fh=fh, fw=fw))
            h, w = ho, wo
        elif kind in ("flatten", "gap"):
            if not spatial:
                raise ParameterError(f"layer {i}: {kind} after the image was already reduced to a number")
            ops.append(Op(kind, h, w, 0, 0))
            h = w = 0
    if h > 0:
        raise ParameterError("a convolutional network must end in a number per image: add Flatten() or "
                             "GlobalAvgPool() (optionally followed by Dense layers)")
    return ImageProgram(tuple(ops), H, W, C)


def validate_images(X, Y=None, dtype=np.float64) -> tuple[np.ndarray, np.ndarray | None]:
    """NHWC image batches: 4-D, real, finite, same per-image shape; float64 (float32 if asked)."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise InputError(f"dtype must be float32 or float64, got {dtype}")

    def one(A, name):
        if A is None:
            return None
        if hasattr(A, "toarray") and not isinstance(A, np.ndarray):
            raise InputError(f"{name} is a sparse matrix; convolutional kernels need dense NHWC images")
        A = np.asarray(A)
        if A.dtype.kind not in "fiu":
            raise InputError(f"{name} must hold real numbers, got dtype {A.dtype}")
        if A.ndim != 4:
            raise InputError(f"{name} must be a batch of NHWC images (4-D: n, height, width, channels), "
                             f"got shape {A.shape}")
        if 0 in A.shape:
            raise InputError(f"{name} is empty (shape {A.shape})")
        A = A.astype(np.float64) if A.dtype.kind in "iu" else A
        if not np.all(np.isfinite(A)):
            bad = np.argwhere(~np.isfinite(A))[0]
            raise InputError(f"{name} contains NaN or Inf (first at image {bad[0]}, pixel ({bad[1]}, {bad[2]}), "
                             f"channel {bad[3]})")
        return np.ascontiguousarray(A, dtype=dtype)

    X = one(X, "X")
    Y = one(Y, "Y")
    if Y is not None and Y.shape[1:] != X.shape[1:]:
        raise InputError(f"X images have shape {X.shape[1:]} but Y images {Y.shape[1:]}")
    return X, Y
