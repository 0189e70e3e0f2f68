r"""Convolutional layers of infinite width (neural-tangents conventions, images NHWC), and their
lowering to the image program (:class:`~dualcalc.program.ImageProgram`).

Use them in :func:`dualcalc.serial` beside :class:`~dualcalc.network.Dense`, the activations,
LayerNorm and the branch layers (FanOut, parallel, Identity, FanInSum, FanInProd).  For an
image pair (x, y) the state of the recursion is the pixel-pair covariance K[i, j] (pixel i of
x, pixel j of y) and the NTK Θ[i, j] (docs/math.md §3):

* input:       K[i, j] = ⟨x_i, y_j⟩ / C (C channels), Θ = 0
* Conv f×f, stride s: K[i, j] ← W²/(fh·fw) · Σ_δ K[s·i+δ, s·j+δ] + b²,
               Θ ← W²/(fh·fw) · Σ_δ Θ[s·i+δ, s·j+δ] + K_new
               ("SAME": zero padding, TensorFlow's: output ⌈n/s⌉, padding max((out−1)·s + f − n, 0) split
               with the smaller half before; "VALID": no padding, output ⌊(n − f)/s⌋ + 1)
* activation:  per pixel pair, with the variances q_x(i) = K_xx[i, i] and q_y(j) = K_yy[j, j]
* AvgPool / SumPool (window f, stride s, padding as Conv): K[o, o'] ← c² Σ_{a, a'} K[s·o+a, s·o'+a']
  over every pair of the two windows, c = 1/(fh·fw) (average; zero padding counts) or 1 (sum)
* GlobalAvgPool / GlobalSumPool: mean / sum over all pixel pairs;  Flatten: mean of the pixel
  diagonal K[i, i] (neural-tangents' Flatten of infinitely many channels); after these, a number
* Dense on an image acts on the channels of every pixel: K ← W² K + b², Θ ← W² Θ + K_new.
* LayerNorm(axis=-1): K[i, j] /= √((q_x(i)+ε)(q_y(j)+ε)), Θ likewise; LayerNorm(axis=(1, 2, 3)):
  the same with each image's mean pixel variance q̄ in place of q(i)
* FanInSum: K = Σ K_b, Θ = Σ Θ_b;  FanInProd: K = Π K_b, Θ = Σ_b Θ_b Π_{b'≠b} K_b' (per pixel pair)

:func:`dualcalc.architectures.myrtle` and :func:`~dualcalc.architectures.wide_resnet` build
networks from these layers.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from .bounds import MAX_STD
from .errors import InputError, ParameterError
from .layers import lower_sequence
from .program import Builder, ImageOp as Op, ImageProgram, Sum, warn_dependent


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


def _padding(v, layer: str) -> str:
    pad = v.upper() if isinstance(v, str) else v
    if pad not in ("SAME", "VALID"):
        raise ParameterError(f"{layer} padding must be 'SAME' or 'VALID', got {v!r}")
    return pad


def _window(n: int, f: int, s: int, padding: str) -> tuple[int, int]:
    """(output size, padding before) of a window f with stride s over n pixels, as TensorFlow/XLA:
    SAME: ⌈n/s⌉ with total padding max((out−1)·s + f − n, 0), half (rounded down) before;
    VALID: ⌊(n − f)/s⌋ + 1 (0 when f > n), no padding."""
    if padding == "SAME":
        out = -(-n // s)
        return out, max((out - 1) * s + f - n, 0) // 2
    return (0 if f > n else (n - f) // s + 1), 0


@dataclass(frozen=True)
class Conv:
    """2-D convolution of infinitely many channels (NTK parameterization).

    ``Conv(W_std, b_std, filter_shape=(3, 3), padding="SAME", strides=(1, 1))``; padding "SAME"
    (zero padding, output ⌈size/stride⌉, TensorFlow's split of the padding) or "VALID" (output
    ⌊(size − filter)/stride⌋ + 1).  The kernel of output pixels (i, j) sums the input pixel
    pairs (s·i + δ, s·j + δ) over the filter offsets δ.
    """

    W_std: float = 1.0
    b_std: float = 0.0
    filter_shape: tuple[int, int] = (3, 3)
    padding: str = "SAME"
    strides: tuple[int, int] = (1, 1)
    is_layer: ClassVar[bool] = True
    kind: ClassVar[str] = "conv"

    def __post_init__(self):
        object.__setattr__(self, "W_std", _std(self.W_std, "W_std", "Conv"))
        object.__setattr__(self, "b_std", _std(self.b_std, "b_std", "Conv"))
        object.__setattr__(self, "filter_shape", _pair(self.filter_shape, "filter_shape", "Conv"))
        object.__setattr__(self, "padding", _padding(self.padding, "Conv"))
        object.__setattr__(self, "strides", _pair(self.strides, "strides", "Conv"))

    def describe(self) -> str:
        st = "" if self.strides == (1, 1) else f", strides={self.strides}"
        return f"Conv({self.W_std!r}, {self.b_std!r}, {self.filter_shape}, {self.padding!r}{st})"

    def lower(self, b, x):
        return b.conv(x, self)


@dataclass(frozen=True)
class AvgPool:
    """Average pooling over ``window`` = (height, width): each output pixel is the mean of its
    window (SAME: zero padding counts in the mean, neural-tangents' default
    ``normalize_edges=False``).  ``strides=None`` is stride = window (dualcalc's default since
    issue 6; neural-tangents' None is stride 1: pass ``strides=(1, 1)`` for that)."""

    window: tuple[int, int] = (2, 2)
    strides: tuple[int, int] | None = None
    padding: str = "VALID"
    is_layer: ClassVar[bool] = True
    kind: ClassVar[str] = "pool"
    average: ClassVar[bool] = True

    def __post_init__(self):
        name = type(self).__name__
        w = _pair(self.window, "window", name)
        object.__setattr__(self, "window", w)
        object.__setattr__(self, "strides", w if self.strides is None else _pair(self.strides, "strides", name))
        object.__setattr__(self, "padding", _padding(self.padding, name))

    def describe(self) -> str:
        return f"{type(self).__name__}({self.window}, strides={self.strides}, padding={self.padding!r})"

    def lower(self, b, x):
        return b.pool(x, self)


@dataclass(frozen=True)
class SumPool(AvgPool):
    """Sum pooling over ``window``: as :class:`AvgPool` without the division by the window
    size (neural-tangents' ``SumPool``; ``strides=None`` is stride = window here too)."""

    average: ClassVar[bool] = False


@dataclass(frozen=True)
class GlobalAvgPool:
    """Average over all pixels: the kernel becomes the mean over all pixel pairs."""

    is_layer: ClassVar[bool] = True
    kind: ClassVar[str] = "gap"
    average: ClassVar[bool] = True

    def describe(self) -> str:
        return f"{type(self).__name__}()"

    def lower(self, b, x):
        return b.global_pool(x, self)


@dataclass(frozen=True)
class GlobalSumPool(GlobalAvgPool):
    """Sum over all pixels: the kernel becomes the sum over all pixel pairs (neural-tangents'
    ``GlobalSumPool``)."""

    average: ClassVar[bool] = False


@dataclass(frozen=True)
class Flatten:
    """Flatten the image (infinitely many channels): the kernel becomes the mean of the
    pixel diagonal, K ← mean_i K[i, i], as neural-tangents' ``stax.Flatten``."""

    is_layer: ClassVar[bool] = True
    kind: ClassVar[str] = "flatten"

    def describe(self) -> str:
        return "Flatten()"

    def lower(self, b, x):
        return b.flatten(x, self)


CONV_KINDS = ("conv", "pool", "gap", "flatten")


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
    """True when the network holds a convolution-type layer (Conv, pooling, Flatten), also
    inside parallel branches."""
    def any_conv(layers):
        return any(layer_kind(l) in CONV_KINDS or any(any_conv(br) for br in getattr(l, "branches", ()))
                   for l in layers)

    return any_conv(getattr(net, "layers", ()))


# ---------------------------------------------------------------------------------------------
# The lowering for images: the layers' lower(b, x) (dualcalc.layers for Dense, activations and
# the branch layers) on this builder make the program the reference recursion and the emitters
# read (its operations: dualcalc.program.ImageOp).
class ImageBuilder:
    """Appends :class:`~dualcalc.program.ImageOp` s.  A value is a register (int; -1 the input
    images) or, between FanOut and a fan-in, a tuple of them.  Per register it tracks the image
    size (0, 0 for a number), whether it is Gaussian (LayerNorm needs it, as in neural-tangents),
    whether a Conv/Dense lies on every path from the input (an activation needs one), and the
    registers it is a function of without fresh weights (dependent branches warn, as for fully
    connected networks)."""

    one = staticmethod(Builder.one)

    def branches(self, x, label: str) -> tuple:
        return Builder.branches(self, x, label)

    def __init__(self, height: int, width: int, channels: int):
        self.H, self.W, self.C = height, width, channels
        self.ops: list[Op] = []
        self.shape = {-1: (height, width)}
        self.gaussian = {-1: True}
        self.linear = {-1: False}
        self.roots = {-1: frozenset({-1})}

    def accepts(self, layer) -> bool:
        return getattr(layer, "is_layer", False) is True

    def _add(self, op: Op, srcs: tuple, *, gaussian: bool, linear: bool) -> int:
        r = len(self.ops)
        self.ops.append(replace(op, srcs=tuple(srcs)))
        self.shape[r] = (op.hout, op.wout)
        self.gaussian[r] = gaussian
        self.linear[r] = linear
        self.roots[r] = frozenset({r}) if op.kind in ("conv", "dense") else \
            frozenset().union(*(self.roots[s] for s in srcs))
        return r

    def _image(self, x, label: str) -> tuple[int, tuple[int, int]]:
        x = self.one(x, label)
        h, w = self.shape[x]
        if h == 0:
            raise ParameterError(f"{label} after Flatten/GlobalAvgPool (the image is gone)")
        return x, (h, w)

    def conv(self, x, layer: Conv) -> int:
        label = layer.describe()
        x, (h, w) = self._image(x, label)
        (fh, fw), (sh, sw) = layer.filter_shape, layer.strides
        (ho, ph), (wo, pw) = _window(h, fh, sh, layer.padding), _window(w, fw, sw, layer.padding)
        if ho < 1 or wo < 1:
            raise ParameterError(f"{label}: VALID {fh}×{fw} convolution of a {h}×{w} image leaves nothing")
        op = Op("conv", h, w, ho, wo, w2=layer.W_std ** 2, b2=layer.b_std ** 2, fh=fh, fw=fw, ph=ph, pw=pw,
                sh=sh, sw=sw)
        return self._add(op, (x,), gaussian=True, linear=True)

    def affine(self, x, *, w2: float, b2: float, standard: bool, out_dim, bias: bool,  # noqa: ARG002
               label: str) -> int:
        x = self.one(x, label)
        if standard:
            raise ParameterError(f"{label}: convolutional networks support the NTK parameterization only")
        h, w = self.shape[x]
        return self._add(Op("dense", h, w, h, w, w2=float(w2), b2=float(b2)), (x,), gaussian=True, linear=True)

    def pointwise(self, x, act, label: str) -> int:
        x = self.one(x, label)
        if not self.linear[x]:
            raise ParameterError(f"{label}: an activation needs a Conv or Dense layer before it "
                                 "(on every branch that reaches it)")
        if not self.gaussian[x]:  # its dual is E[σ(u)σ(v)] for Gaussian (u, v), as neural-tangents checks
            raise ParameterError(f"{label}: an activation needs Gaussian pre-activations (a Conv or Dense layer, "
                                 "a pooling or a sum of them before it); it follows an activation or a FanInProd here")
        h, w = self.shape[x]
        return self._add(Op("act", h, w, h, w, act=act), (x,), gaussian=False, linear=True)

    def pool(self, x, layer: AvgPool) -> int:
        label = layer.describe()
        x, (h, w) = self._image(x, label)
        (fh, fw), (sh, sw) = layer.window, layer.strides
        (ho, ph), (wo, pw) = _window(h, fh, sh, layer.padding), _window(w, fw, sw, layer.padding)
        if ho < 1 or wo < 1:
            raise ParameterError(f"{label} of a {h}×{w} image leaves nothing")
        op = Op("pool", h, w, ho, wo, fh=fh, fw=fw, ph=ph, pw=pw, sh=sh, sw=sw,
                scale=1.0 / (fh * fw) if layer.average else 1.0)
        return self._add(op, (x,), gaussian=self.gaussian[x], linear=self.linear[x])

    def global_pool(self, x, layer) -> int:
        label = layer.describe()
        x, (h, w) = self._image(x, label)
        op = Op("gap", h, w, 0, 0, scale=1.0 / (h * w) if layer.average else 1.0)
        return self._add(op, (x,), gaussian=self.gaussian[x], linear=self.linear[x])

    def flatten(self, x, layer) -> int:
        x, (h, w) = self._image(x, layer.describe())
        return self._add(Op("flatten", h, w, 0, 0), (x,), gaussian=self.gaussian[x], linear=self.linear[x])

    def normalize(self, x, eps: float, label: str, axis=-1) -> int:
        x = self.one(x, label)
        if not self.gaussian[x]:
            raise ParameterError(f"{label} needs Gaussian pre-activations (after a Conv or Dense layer, or a sum "
                                 "of them), as in neural-tangents; it follows an activation or a product here")
        h, w = self.shape[x]
        if axis in (-1, 3):
            kind = "norm"
        elif axis == (1, 2, 3) and h > 0:
            kind = "norm_image"
        elif axis == (1, 2, 3):
            raise ParameterError(f"{label} after Flatten/GlobalAvgPool: the image axes are gone (use axis=-1)")
        else:
            raise ParameterError(f"{label} on images: axis 1 is the height (neural-tangents requires the "
                                 "channel axis); use axis=-1 (each pixel) or axis=(1, 2, 3) (the whole image)")
        return self._add(Op(kind, h, w, h, w, eps=float(eps)), (x,), gaussian=True, linear=self.linear[x])

    def widths(self, x):
        raise ParameterError("FanInConcat of images (a channel concatenation) is not supported yet; "
                             "FanInSum() and FanInProd() are")

    def fan_in(self, x, kind: type, label: str, weights=None, width="same") -> int:  # noqa: ARG002
        x = self.branches(x, label)
        shapes = [self.shape[r] for r in x]
        if len(set(shapes)) > 1:
            sizes = ", ".join("a number" if s[0] == 0 else f"{s[0]}×{s[1]}" for s in shapes)
            raise ParameterError(f"{label}: the branches end in different image sizes ({sizes}); a strided "
                                 "branch needs a shortcut with the same strides, e.g. Conv(..., strides=(2, 2))")
        warn_dependent(self.roots, x, label, "Conv or Dense")
        h, w = shapes[0]
        is_sum = kind is Sum
        return self._add(Op("sum" if is_sum else "prod", h, w, h, w), x,
                         gaussian=all(self.gaussian[r] for r in x) if is_sum else False,
                         linear=all(self.linear[r] for r in x))

    def finish(self, x) -> ImageProgram:
        x = self.one(x, "the network's output")
        if self.shape[x][0] > 0:
            raise ParameterError("a convolutional network must end in a number per image: add Flatten() or "
                                 "GlobalAvgPool() (optionally followed by Dense layers)")
        if x != len(self.ops) - 1:  # pragma: no cover - a fan-in is always the last op written
            raise ParameterError("the network's output is not its last operation")
        return ImageProgram(tuple(self.ops), self.H, self.W, self.C)


def image_program(net, input_shape: Sequence[int]) -> ImageProgram:
    """Check the network against images of shape (H, W, C) and lower it to its program: one op
    per Conv/Dense/activation/pooling/LayerNorm/fan-in, in the order the layers run."""
    if len(input_shape) != 3:
        raise InputError(f"images must be NHWC (4-D); got per-image shape {tuple(input_shape)}")
    H, W, C = (int(s) for s in input_shape)
    b = ImageBuilder(H, W, C)
    return b.finish(lower_sequence(net.layers, b, -1))


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
