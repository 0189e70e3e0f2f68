r"""The network program: the one description of a fully connected network that every backend reads.

A program is a straight-line list of single-assignment kernel operations; operation ``i``
writes register ``i``.  A register holds, for a pair of points (x, y), the NNGP entry K and
the NTK entry Θ, and for each point its diagonal (q, t) = (K(x, x), Θ(x, x)).  Operations
read earlier registers (``srcs``), so a branch is simply a register read twice (fan-out)
and a fan-in an operation with several sources:

======================  ====================================================================
``Input()``             K = ⟨x, y⟩/d,  Θ = 0
``Affine(src, ...)``    K ← W²·K + b²,  Θ ← W²·Θ + K_new   (standard: Θ ← N·K + W²·Θ [+ 1])
``Pointwise(src, ...)`` K ← k(q_x, q_y, K),  Θ ← Θ·k̇(q_x, q_y, K)   (an activation's duals)
``Normalize(src, ...)`` K ← K/√((q_x+ε)(q_y+ε)),  Θ likewise        (LayerNorm)
``Sum(srcs)``           K ← Σ K_i,  Θ ← Σ Θ_i                        (FanInSum)
``Prod(srcs)``          K ← Π K_i,  Θ ← Σ_i Θ_i Π_{j≠i} K_j            (FanInProd)
======================  ====================================================================

Operations that need the points' own variances (Pointwise, Normalize) carry a ``slot``: the
row of the per-point arrays the runtime computes once, O(n·depth), by running the same
program on the diagonal (:func:`dualcalc.network.recursion_plan`).  The program is made by
one lowering from the layers (:mod:`dualcalc.layers`); it knows nothing of layer classes,
and :attr:`Program.key` is everything the generated text depends on.

Convolutional networks have their own program for now, :class:`ImageProgram` (image sizes,
filters and pools per step; :func:`dualcalc.conv.image_program`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import cached_property

import sympy as sp

from .dual import HERMITE
from .errors import ParameterError
from .warn import warn


@dataclass(frozen=True)
class Input:
    """K = ⟨x, y⟩/d, Θ = 0 (register 0 of every program)."""

    srcs: tuple = ()
    label: str = "input"


@dataclass(frozen=True)
class Affine:
    """K ← w2·K + b2; Θ ← w2·Θ + K_new (NTK parameterization) or width·K + w2·Θ (+ 1 with a
    trainable bias; standard parameterization, ``width`` None: the data dimension d)."""

    src: int
    w2: float
    b2: float
    standard: bool = False
    width: int | None = None
    bias: bool = True
    label: str = ""

    @property
    def srcs(self) -> tuple:
        return (self.src,)


@dataclass(frozen=True)
class Pointwise:
    """An activation: K ← k(q_x, q_y, K), Θ ← Θ·k̇ (Θ ← 0 with ``zero_ntk``: σ' is a delta).

    ``method`` "closed-form" (``k``, ``kdot`` SymPy in q1, q2, c, rho) or "hermite" (the
    series from per-point coefficient tables, row ``hermite_slot``); ``name`` the emitted
    function (one per distinct dual); ``act`` the Activation (the runtime's per-point plan)."""

    src: int
    slot: int
    label: str
    method: str
    rule: str
    k: sp.Expr | None = None
    kdot: sp.Expr | None = None
    zero_ntk: bool = False
    hermite_slot: int | None = None
    name: str = ""
    act: object = field(default=None, compare=False, repr=False)

    @property
    def srcs(self) -> tuple:
        return (self.src,)


@dataclass(frozen=True)
class Normalize:
    """LayerNorm over the (infinitely many) channels: K ← K/√((q_x+ε)(q_y+ε)), Θ likewise,
    q ← q/(q+ε) (neural-tangents' ``LayerNorm`` kernel for Gaussian inputs)."""

    src: int
    slot: int
    eps: float
    label: str = "LayerNorm"

    @property
    def srcs(self) -> tuple:
        return (self.src,)


@dataclass(frozen=True)
class Sum:
    """K ← Σ w_i K_i, Θ ← Σ w_i Θ_i (FanInSum: all w_i = 1, ``weights`` None)."""

    srcs: tuple
    label: str = "FanInSum()"
    weights: tuple | None = None

    def terms(self, names, lit=repr) -> str | None:
        """The weighted sum of ``names`` (one per source, None for a term that is 0) as text,
        literals printed by ``lit``; None when every term is 0."""
        ws = self.weights or (None,) * len(names)
        parts = [n if w is None else f"{lit(w)} * {n}" for w, n in zip(ws, names, strict=True) if n is not None]
        return " + ".join(parts) if parts else None


@dataclass(frozen=True)
class Prod:
    """K ← Π K_i, Θ ← Σ_i Θ_i Π_{j≠i} K_j (FanInProd: the product rule)."""

    srcs: tuple
    label: str = "FanInProd()"

    def terms(self, cs, ts) -> tuple[str, str | None]:
        """(K, Θ) of the product rule as text from the sources' K names ``cs`` and Θ names
        ``ts`` (None for a Θ that is 0); Θ None when every term is 0."""
        kk, tt = cs[0], ts[0]
        for c, t in zip(cs[1:], ts[1:], strict=True):
            parts = ([f"({tt}) * {c}" if " + " in tt else f"{tt} * {c}"] if tt else []) + ([f"{kk} * {t}"] if t else [])
            tt = " + ".join(parts) if parts else None
            kk = f"{kk} * {c}"
        return kk, tt


OPS = (Input, Affine, Pointwise, Normalize, Sum, Prod)


@dataclass(frozen=True)
class Program:
    """Operations (register i = operation i) and the register that is the network's output."""

    ops: tuple
    output: int
    description: str

    @property
    def slot_ops(self) -> list:
        """The operations with a per-point slot (Pointwise, Normalize), in slot order."""
        return [op for op in self.ops if isinstance(op, Pointwise | Normalize)]

    def act_ops(self) -> list[Pointwise]:
        return [op for op in self.ops if isinstance(op, Pointwise)]

    @property
    def n_act(self) -> int:
        """Number of slots (rows of the per-point arrays)."""
        return len(self.slot_ops)

    @property
    def n_hermite(self) -> int:
        return sum(op.method == HERMITE for op in self.act_ops())

    @property
    def activations(self) -> list:
        return [op.act for op in self.act_ops()]

    @property
    def serial(self) -> bool:
        """Every operation reads the one before it (no branches)."""
        return all(op.srcs == (i - 1,) for i, op in enumerate(self.ops) if i)

    @cached_property
    def last_use(self) -> list[int]:
        """For each register, the last operation that reads it (len(ops) for the output)."""
        last = list(range(len(self.ops)))
        for i, op in enumerate(self.ops):
            for s in op.srcs:
                last[s] = i
        last[self.output] = len(self.ops)
        return last

    def listing(self) -> str:
        """The program as text, one operation per line: ``r3 = relu(r2)  # closed form``."""
        lines = []
        for r, op in enumerate(self.ops):
            args = ", ".join(f"r{s}" for s in op.srcs)
            note = ""
            if isinstance(op, Pointwise):
                note = f"  # {op.method} ({op.rule}), slot {op.slot}"
            elif isinstance(op, Normalize):
                note = f"  # slot {op.slot}"
            elif isinstance(op, Input):
                note = "  # K = <x, y>/d, Θ = 0"
            lines.append(f"r{r} = {op.label}" + (f"({args})" if args else "") + note)
        lines.append(f"output: r{self.output}")
        return "\n".join(lines)

    @cached_property
    def key(self) -> str:
        """Everything the emitted text depends on (the duals' expressions included)."""
        parts = [self.description, f"output {self.output}"]
        for op in self.ops:
            if isinstance(op, Pointwise):
                parts.append(repr(("pointwise", op.src, op.slot, op.method, op.rule, op.name, op.zero_ntk,
                                   op.hermite_slot, sp.srepr(op.k) if op.k is not None else None,
                                   sp.srepr(op.kdot) if op.kdot is not None else None)))
            else:
                parts.append(repr(op))
        return "\n".join(parts)


def warn_dependent(roots: list, x: tuple, label: str, layer: str) -> None:
    """Warn when two branches of a fan-in share a root (pre-activations reached without fresh
    ``layer`` weights in between): the fan-in formulas assume independent branches."""
    shared = [(i, j) for i in range(len(x)) for j in range(i + 1, len(x)) if roots[x[i]] & roots[x[j]]]
    if shared:
        i, j = shared[0]
        warn(f"{label}: branches {i} and {j} read the same pre-activations with no {layer} of their own in "
             "between, so in a finite network they are dependent; the kernel (neural-tangents' formula, "
             f"which assumes independent branches) does not describe that network. Give each branch a "
             f"{layer} layer (a residual block's Identity shortcut is fine when the other branch has one)",
             key=("dependent-branches", label, i, j))


def _ident(label: str) -> str:
    s = re.sub(r"[^0-9a-zA-Z_]+", "_", label).strip("_").lower()
    return (s[:24] or "act") if not s[:1].isdigit() else "a_" + s[:22]


class Builder:
    """Appends operations for the layers' lowerings and checks what the kernels assume.

    A value is a register (int) or, between a fan-out and a fan-in, a tuple of them.  Per
    register it tracks whether the pre-activations are Gaussian (LayerNorm needs it, as in
    neural-tangents) and the width that a standard-parameterization Dense reads.
    """

    INPUT_WIDTH = "d"  # the data dimension, known at run time

    def __init__(self):
        self.ops: list = [Input()]
        self.gaussian: list[bool] = [True]
        self.width: list = [self.INPUT_WIDTH]
        # per register, the registers whose pre-activations it is a function of without fresh
        # weights in between (an Affine starts a new root): branches that share a root are
        # dependent, which the fan-in formulas do not account for
        self.roots: list[frozenset] = [frozenset({0})]
        self._names: dict[tuple, str] = {}
        self._n_hermite = 0
        self._n_slots = 0

    def _add(self, op, gaussian: bool, width) -> int:
        r = len(self.ops)
        self.ops.append(op)
        self.gaussian.append(gaussian)
        self.width.append(width)
        self.roots.append(frozenset({r}) if isinstance(op, Affine) else
                          frozenset().union(*(self.roots[s] for s in op.srcs)))
        return r

    @staticmethod
    def one(x, what: str) -> int:
        if isinstance(x, tuple):
            raise ParameterError(f"{what} takes one input but gets {len(x)} branches; close them with "
                                 "FanInSum() or FanInProd(), or give each its own layers with parallel(...)")
        return x

    def affine(self, x, *, w2: float, b2: float, standard: bool, out_dim: int | None, bias: bool, label: str) -> int:
        x = self.one(x, label)
        width = self.width[x]
        if standard and width is None:
            raise ParameterError("standard parameterization needs out_dim on the previous Dense layer "
                                 "(its width enters the NTK)")
        op = Affine(x, w2, b2, standard, None if width == self.INPUT_WIDTH else width, bias, label)
        return self._add(op, True, out_dim)

    def pointwise(self, x, act, label: str) -> int:
        x = self.one(x, label)
        if x == 0:
            raise ParameterError(f"{act.label} is an activation applied to the raw input; "
                                 "put a Dense (or Conv) layer before it")
        dual = act.dual
        zero = dual.ntk_convention == "zero-a.e."
        key = (label, dual.method, str(dual.nngp_rho), str(dual.ntk_rho), zero)
        name = self._names.setdefault(key, f"dual_{len(self._names) + 1}_{_ident(act.label)}")
        slot = self._n_slots
        self._n_slots += 1
        if dual.method == HERMITE:
            op = Pointwise(x, slot, label, HERMITE, dual.rule, zero_ntk=zero, hermite_slot=self._n_hermite,
                           name=name, act=act)
            self._n_hermite += 1
        else:
            no_kdot = zero and dual.ntk_rho is None
            op = Pointwise(x, slot, label, dual.method, dual.rule, k=dual.nngp_rho,
                           kdot=sp.S.Zero if no_kdot else dual.ntk_rho, zero_ntk=no_kdot, name=name, act=act)
        return self._add(op, False, self.width[x])

    def accepts(self, layer) -> bool:  # noqa: ARG002 - the image builder accepts conv layers
        """Whether a layer that is not a fully connected one lowers here (none do)."""
        return False

    def normalize(self, x, eps: float, label: str, axis=-1) -> int:
        x = self.one(x, label)
        if axis not in (-1, 1):
            raise ParameterError(f"{label}: a fully connected network's LayerNorm normalises its channels "
                                 "(axis=-1); image axes such as (1, 2, 3) need a convolutional network")
        if not self.gaussian[x]:
            raise ParameterError(f"{label} needs Gaussian pre-activations (after a Dense layer, or a sum of "
                                 "them), as in neural-tangents; it follows an activation or a product here")
        slot = self._n_slots
        self._n_slots += 1
        return self._add(Normalize(x, slot, float(eps), label), True, self.width[x])

    def branches(self, x, label: str) -> tuple:
        if not isinstance(x, tuple):
            raise ParameterError(f"{label} needs several branches (a FanOut before it), got one input")
        return x

    def widths(self, x: tuple) -> list:
        """The widths the branches' Dense layers declared (``out_dim``; None where unknown)."""
        return [None if self.width[r] == self.INPUT_WIDTH else self.width[r] for r in x]

    def fan_in(self, x, kind: type, label: str, weights: tuple | None = None, width="same") -> int:
        x = self.branches(x, label)
        if width == "same":
            widths = {self.width[r] for r in x}
            width = widths.pop() if len(widths) == 1 else None
        warn_dependent(self.roots, x, label, "Dense")
        gaussian = all(self.gaussian[r] for r in x) if kind is Sum else (len(x) == 1 and self.gaussian[x[0]])
        op = kind(tuple(x), label) if weights is None else kind(tuple(x), label, tuple(float(w) for w in weights))
        return self._add(op, gaussian, width)

    def finish(self, x, description: str) -> Program:
        x = self.one(x, "the network's output")
        return Program(tuple(self.ops), x, description)


# ---------------------------------------------------------------------------------------------
# The program of a convolutional network (made by dualcalc.conv.image_program)
@dataclass(frozen=True)
class ImageOp:
    """One step of the image-kernel recursion, with its input and output shapes.

    ``kind``: "conv" (w2, b2, fh, fw, strides sh, sw, ph, pw = padding before, in height/width),
    "act" (act), "pool" (window fh, fw, strides sh, sw, padding before ph, pw, ``scale`` per
    side: 1/(fh·fw) averages, 1 sums), "flatten", "gap" (``scale``: 1/P averages, 1 sums),
    "dense" (w2, b2), "sum" / "prod" (FanInSum / FanInProd of ``srcs``), "norm" (LayerNorm
    over the channels of each pixel: K[i, j] /= √((q_x(i)+ε)(q_y(j)+ε))), "norm_image"
    (LayerNorm over the whole image: divide by √((q̄_x+ε)(q̄_y+ε)), q̄ the mean pixel variance).
    ``hin, win`` / ``hout, wout`` are the image sizes before and after (0, 0 once the state is a
    number).  ``srcs``: the registers the op reads (register r is op r's output, -1 the input
    images); None is the op before it.  Padding after a window is whatever completes the last
    window, (hout − 1)·sh + fh − hin − ph (negative: VALID rows that no window reaches).
    """

    kind: str
    hin: int
    win: int
    hout: int
    wout: int
    w2: float = 0.0
    b2: float = 0.0
    fh: int = 1
    fw: int = 1
    ph: int = 0
    pw: int = 0
    act: object = field(default=None, compare=False)
    srcs: tuple | None = None
    sh: int = 1
    sw: int = 1
    scale: float | None = None
    eps: float = 0.0

    @property
    def spatial(self) -> bool:
        return self.hin > 0

    @property
    def pool_scale(self) -> float:
        """The factor per side of a "pool" or "gap" (None: the average)."""
        if self.scale is not None:
            return self.scale
        return 1.0 / (self.fh * self.fw) if self.kind == "pool" else 1.0 / max(self.hin * self.win, 1)


#: the kinds the generated Numba/CUDA conv passes run (codegen.conv_numba, codegen.conv_cuda)
SERIAL_KINDS = ("conv", "dense", "act", "pool", "flatten", "gap")


@dataclass(frozen=True)
class ImageProgram:
    """Operations (register i = op i; the last is the output) of a convolutional network for
    images of height × width × channels."""

    ops: tuple[ImageOp, ...]
    height: int
    width: int
    channels: int

    @property
    def pixels(self) -> int:
        return self.height * self.width

    @property
    def act_ops(self) -> list[int]:
        return [i for i, op in enumerate(self.ops) if op.kind == "act"]

    @property
    def slot_ops(self) -> list[int]:
        """The ops that read the images' own pixel variances (activations and LayerNorms)."""
        return [i for i, op in enumerate(self.ops) if op.kind in ("act", "norm", "norm_image")]

    def sources(self, i: int) -> tuple:
        op = self.ops[i]
        return (i - 1,) if op.srcs is None else tuple(op.srcs)

    @property
    def serial(self) -> bool:
        """What the generated passes run: every op reads the one before it, and only stride-1
        convolutions, stride = window average pools without padding, average global pools."""
        return not self.unsupported

    @property
    def unsupported(self) -> list[str]:
        """Why the program is not :attr:`serial` (empty when it is), one reason per op."""
        out = []
        for i, op in enumerate(self.ops):
            if self.sources(i) != (i - 1,):
                out.append(f"op {i} ({op.kind}) reads registers {self.sources(i)} (a branch)")
            elif op.kind not in SERIAL_KINDS:
                out.append(f"op {i} is a {op.kind}")
            elif op.kind == "conv" and (op.sh, op.sw) != (1, 1):
                out.append(f"op {i}: convolution with strides {(op.sh, op.sw)}")
            elif op.kind == "pool" and ((op.sh, op.sw) != (op.fh, op.fw) or op.ph or op.pw
                                        or op.hout != op.hin // op.fh or op.wout != op.win // op.fw):
                out.append(f"op {i}: pooling with strides {(op.sh, op.sw)} ≠ window {(op.fh, op.fw)} or padding")
            elif op.kind in ("pool", "gap") and op.scale is not None and not math.isclose(
                    op.scale, 1.0 / (op.fh * op.fw) if op.kind == "pool" else 1.0 / (op.hin * op.win)):
                out.append(f"op {i}: sum pooling")
        return out
