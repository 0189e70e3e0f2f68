r"""Fully connected layers: one small frozen class per layer, its kernel in its docstring and its
lowering to program operations (:mod:`dualcalc.program`), with neural-tangents' names and semantics.

A layer's ``lower(b, x)`` takes the :class:`~dualcalc.program.Builder` and its input — one
register, or between :class:`FanOut` and a fan-in a tuple of them — and returns its output.
:func:`lower` runs a sequence of layers (activations lower to their duals); it is the one
lowering every backend's program comes from.  Adding a layer is a class here with its
``lower``, its name in ``dualcalc/__init__.py``, and (for a new kind of kernel operation)
an operation in ``dualcalc/program.py`` that the backends run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .activation import Activation
from .bounds import MAX_STD
from .errors import ParameterError
from .program import Builder, Prod, Program, Sum


@dataclass(frozen=True)
class Dense:
    """Fully connected layer of infinite width.

    NTK parameterization (default): K ← W_std² K + b_std², Θ ← W_std² Θ + K_new.
    Standard parameterization: the same K, Θ ← width_in·K_old + W_std² Θ (+ 1 with a bias),
    where width_in is the previous Dense layer's ``out_dim`` (the data dimension d
    for the first layer).

    ``b_std=None`` means no bias parameter (neural-tangents' default); it differs from
    ``b_std=0.0`` (a bias initialised at zero, the default here) only in the standard
    parameterization, where a trainable bias adds 1 to the NTK — exactly as in
    neural-tangents for the same arguments.
    """

    W_std: float = 1.0
    b_std: float | None = 0.0
    parameterization: str = "ntk"
    out_dim: int | None = None

    def __post_init__(self):
        if self.b_std is None:
            object.__setattr__(self, "b_std", 0.0)
            object.__setattr__(self, "_no_bias", True)
        for name in ("W_std", "b_std"):
            v = getattr(self, name)
            if not isinstance(v, int | float | np.floating | np.integer) or isinstance(v, bool) \
                    or not np.isfinite(v) or v < 0:
                raise ParameterError(f"Dense {name} must be a finite non-negative number, got {v!r}")
            if float(v) > MAX_STD:
                raise ParameterError(f"Dense {name}={v!r}: its square, the variance the kernel uses, overflows "
                                     f"float64 (largest usable value {MAX_STD:.3g})")
        if self.parameterization not in ("ntk", "standard"):
            raise ParameterError(f"parameterization must be 'ntk' or 'standard', got {self.parameterization!r}")
        if self.out_dim is not None and (isinstance(self.out_dim, bool) or int(self.out_dim) != self.out_dim
                                         or self.out_dim < 1):
            raise ParameterError(f"out_dim must be a positive integer or None, got {self.out_dim!r}")

    @property
    def has_bias(self) -> bool:
        """False only for ``b_std=None`` (no bias parameter at all)."""
        return not getattr(self, "_no_bias", False)

    def describe(self) -> str:
        extra = "" if self.parameterization == "ntk" else f", parameterization='standard', out_dim={self.out_dim}"
        b = "None" if not self.has_bias else repr(float(self.b_std))
        return f"Dense(W_std={float(self.W_std)!r}, b_std={b}{extra})"

    def lower(self, b: Builder, x):
        return b.affine(x, w2=float(self.W_std) ** 2, b2=float(self.b_std) ** 2,
                        standard=self.parameterization == "standard", out_dim=self.out_dim,
                        bias=self.has_bias, label=self.describe())


@dataclass(frozen=True)
class Identity:
    """The identity: K and Θ unchanged (one input or several branches)."""

    def describe(self) -> str:
        return "Identity()"

    def lower(self, b: Builder, x):
        return x


@dataclass(frozen=True)
class FanOut:
    """``num`` copies of the input, one per branch: each branch starts from the same K and Θ."""

    num: int

    def __post_init__(self):
        if isinstance(self.num, bool) or not isinstance(self.num, int | np.integer) or self.num < 1:
            raise ParameterError(f"FanOut needs a positive integer number of branches, got {self.num!r}")

    def describe(self) -> str:
        return f"FanOut({self.num})"

    def lower(self, b: Builder, x):
        return (b.one(x, self.describe()),) * int(self.num)


@dataclass(frozen=True)
class FanInSum:
    """Sum of the branches: K = Σ_i K_i, Θ = Σ_i Θ_i (the branches' outputs are independent
    given the input, and share every parameter before the FanOut)."""

    def describe(self) -> str:
        return "FanInSum()"

    def lower(self, b: Builder, x):
        return b.fan_in(x, Sum, self.describe())


@dataclass(frozen=True)
class FanInProd:
    """Elementwise product of the branches: K = Π_i K_i, Θ = Σ_i Θ_i Π_{j≠i} K_j (product rule)."""

    def describe(self) -> str:
        return "FanInProd()"

    def lower(self, b: Builder, x):
        return b.fan_in(x, Prod, self.describe())


@dataclass(frozen=True)
class FanInConcat:
    """Concatenation of the branches along the channels (``axis=-1``): the width-weighted mean
    K = Σ_i n_i K_i / Σ_i n_i, Θ likewise, n_i the branches' widths (their last Dense's
    ``out_dim``; the plain mean when none is given) — neural-tangents' ``FanInConcat(-1)``.

    Added as the example of docs/architecture.md ("Adding a layer"): it lowers to the weighted
    :class:`~dualcalc.program.Sum` every backend already runs, so this class is all it took."""

    axis: int = -1

    def __post_init__(self):
        if self.axis not in (-1, 1) or isinstance(self.axis, bool):
            raise ParameterError(f"FanInConcat of a fully connected network concatenates channels (axis=-1); "
                                 f"got axis={self.axis!r}")

    def describe(self) -> str:
        return f"FanInConcat(axis={self.axis})"

    def lower(self, b: Builder, x):
        widths = b.widths(b.branches(x, self.describe()))
        known = [w for w in widths if w is not None]
        if known and len(known) < len(widths):
            raise ParameterError(f"{self.describe()}: give every branch's last Dense an out_dim, or none "
                                 f"(the widths weight the mean); got {widths}")
        n = widths if known else [1] * len(widths)
        return b.fan_in(x, Sum, self.describe(), weights=tuple(w / sum(n) for w in n),
                        width=sum(known) if known else None)


@dataclass(frozen=True)
class LayerNorm:
    """Normalise each point's pre-activations over the (infinitely many) channels:
    K(x, y) ← K(x, y)/√((q_x + ε)(q_y + ε)), Θ likewise, q_x = K(x, x) — neural-tangents'
    ``LayerNorm(axis=-1, eps)`` kernel; its input must be Gaussian (after Dense, a sum of them,
    or the raw input), as there.

    On images (NHWC, :mod:`dualcalc.conv`): ``axis=-1`` normalises each pixel over its channels
    (K[i, j] /= √((q_x(i)+ε)(q_y(j)+ε))), ``axis=(1, 2, 3)`` the whole image (q̄, the image's mean
    pixel variance, in place of q(i)); a fully connected network refuses the tuple."""

    axis: int | tuple = -1
    eps: float = 1e-12

    def __post_init__(self):
        if isinstance(self.axis, tuple | list):
            ok = all(isinstance(a, int | np.integer) and not isinstance(a, bool) and -3 <= a <= 3 and a != 0
                     for a in self.axis)
            canon = tuple(sorted({int(a) % 4 for a in self.axis})) if ok else None
            if canon not in ((3,), (1, 2, 3)) or len(canon) != len(self.axis):
                raise ParameterError(f"LayerNorm normalises the channels (axis=-1) or, on images, the whole "
                                     f"image (axis=(1, 2, 3)); got axis={self.axis!r}")
            object.__setattr__(self, "axis", -1 if canon == (3,) else canon)
        elif self.axis not in (-1, 1, 3) or isinstance(self.axis, bool):
            raise ParameterError(f"LayerNorm normalises the channel axis (axis=-1) or, on images, the whole "
                                 f"image (axis=(1, 2, 3)); got axis={self.axis!r}")
        if isinstance(self.eps, bool) or not isinstance(self.eps, int | float | np.floating) \
                or not math.isfinite(self.eps) or self.eps < 0:
            raise ParameterError(f"LayerNorm eps must be a finite non-negative number, got {self.eps!r}")

    def describe(self) -> str:
        return f"LayerNorm(axis={self.axis}, eps={float(self.eps)!r})"

    def lower(self, b: Builder, x):
        return b.normalize(x, float(self.eps), self.describe(), axis=self.axis)


@dataclass(frozen=True)
class Parallel:
    """Branch i of the input runs ``branches[i]`` (a tuple of layers); made by :func:`dualcalc.parallel`."""

    branches: tuple

    def describe(self) -> str:
        return "parallel(" + ", ".join(describe_sequence(br) for br in self.branches) + ")"

    def lower(self, b: Builder, x):
        if not isinstance(x, tuple) or len(x) != len(self.branches):
            got = f"{len(x)} branches" if isinstance(x, tuple) else "one input"
            raise ParameterError(f"parallel of {len(self.branches)} networks needs {len(self.branches)} branches "
                                 f"(a FanOut({len(self.branches)}) before it), got {got}")
        return tuple(lower_sequence(br, b, xi) for br, xi in zip(self.branches, x, strict=True))


BRANCH_LAYERS = (Identity, FanOut, FanInSum, FanInProd, FanInConcat, LayerNorm, Parallel)


def is_fc_layer(obj) -> bool:
    """A layer this module lowers (Dense, the branch layers, an activation)."""
    return isinstance(obj, (Dense, Activation, *BRANCH_LAYERS))


def describe(layer) -> str:
    if isinstance(layer, Activation):
        p = ", ".join(f"{k}={v!r}" for k, v in layer.params.items())
        return f"{layer.label}({p})" if p else layer.label
    if hasattr(layer, "describe"):
        return layer.describe()
    return repr(layer)


def describe_sequence(layers) -> str:
    return "serial(" + ", ".join(describe(l) for l in layers) + ")"


def lower_sequence(layers, b: Builder, x):
    for layer in layers:
        if isinstance(layer, Activation):
            x = b.pointwise(x, layer, describe(layer))
        elif is_fc_layer(layer) or b.accepts(layer):  # the image builder takes conv layers too
            x = layer.lower(b, x)
        else:
            raise ParameterError(f"the fully connected kernels cannot run layer {layer!r} "
                                 "(use the convolutional network kernels for Conv/pooling layers)")
    return x


def lower(layers) -> Program:
    """The program of a sequence of layers: the one lowering (see the module docstring)."""
    b = Builder()
    out = lower_sequence(layers, b, 0)
    return b.finish(out, describe_sequence(layers))
