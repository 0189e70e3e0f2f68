r"""The small program the emitters read, built from a fully connected network.

:func:`build_spec` turns :func:`dualcalc.network.layer_program` into a list of
:class:`DenseOp` and :class:`ActOp` with everything an emitter needs: the squared
weights, the parameterization, and for each activation either its closed-form
(k, k̇) as SymPy expressions in (q1, q2, c, ρ) or the fact that it runs as a
Hermite series from per-point coefficient tables.  The spec, not the network,
determines the generated text (and therefore the cache key).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

import sympy as sp

from dualcalc.activation import Activation
from dualcalc.dual import HERMITE
from dualcalc.errors import ParameterError


@dataclass(frozen=True)
class DenseOp:
    """K ← w2·K + b2; Θ ← w2·Θ + K_new (NTK) or width·K_old + w2·Θ + bias (standard)."""

    w2: float
    b2: float
    standard: bool = False
    width: int | None = None  # None with standard: the data dimension d (a run-time argument)
    bias: bool = True
    label: str = ""


@dataclass(frozen=True)
class ActOp:
    """One activation: closed form (k, kdot SymPy in q1, q2, c, rho) or Hermite tables."""

    slot: int  # index among the activation layers (rows of the per-point variance arrays)
    label: str
    method: str  # "closed-form" | "hermite"
    rule: str
    k: sp.Expr | None = None
    kdot: sp.Expr | None = None
    zero_ntk: bool = False  # σ' is a delta and no a.e.-derivative dual is given: Θ ← 0
    hermite_slot: int | None = None  # index among the Hermite layers (their tables)
    name: str = field(default="")  # identifier-safe name for the emitted function


@dataclass
class KernelSpec:
    ops: list
    description: str
    n_act: int
    n_hermite: int
    activations: list[Activation]

    def act_ops(self) -> list[ActOp]:
        return [op for op in self.ops if isinstance(op, ActOp)]

    @cached_property
    def key(self) -> str:
        """Everything the emitted text depends on (the duals' expressions included)."""
        parts = [self.description]
        for op in self.ops:
            if isinstance(op, DenseOp):
                parts.append(repr((op.w2, op.b2, op.standard, op.width, op.bias)))
            else:
                parts.append(repr((op.slot, op.method, op.rule, op.name, op.zero_ntk, op.hermite_slot,
                                   sp.srepr(op.k) if op.k is not None else None,
                                   sp.srepr(op.kdot) if op.kdot is not None else None)))
        return "\n".join(parts)


def _ident(label: str) -> str:
    s = re.sub(r"[^0-9a-zA-Z_]+", "_", label).strip("_").lower()
    return (s[:24] or "act") if not s[:1].isdigit() else "a_" + s[:22]


def describe_layer(layer) -> str:
    from dualcalc.network import Dense

    if isinstance(layer, Dense):
        extra = "" if layer.parameterization == "ntk" else f", parameterization='standard', out_dim={layer.out_dim}"
        b = "None" if not layer.has_bias else repr(float(layer.b_std))
        return f"Dense(W_std={float(layer.W_std)!r}, b_std={b}{extra})"
    if isinstance(layer, Activation):
        p = ", ".join(f"{k}={v!r}" for k, v in layer.params.items())
        return f"{layer.label}({p})" if p else layer.label
    return repr(layer)


def build_spec(net) -> KernelSpec:
    """The emitter program of a fully connected network (Dense and activation layers);
    kept on the network object (its layers are immutable)."""
    cached = getattr(net, "_kernel_spec", None)
    if cached is not None and cached[0] is net.layers:
        return cached[1]
    spec = _build_spec(net)
    try:
        net._kernel_spec = (net.layers, spec)
    except AttributeError:
        pass
    return spec


def _build_spec(net) -> KernelSpec:
    from dualcalc.network import Dense

    ops: list = []
    acts: list[Activation] = []
    names: dict[tuple, str] = {}  # one emitted function per distinct dual
    n_h = 0
    width: int | None = None
    for layer in net.layers:
        if isinstance(layer, Dense):
            std = layer.parameterization == "standard"
            first = not any(isinstance(o, DenseOp) for o in ops)
            if std and not first and width is None:
                raise ParameterError("standard parameterization needs out_dim on the previous Dense layer "
                                     "(its width enters the NTK)")
            ops.append(DenseOp(w2=float(layer.W_std) ** 2, b2=float(layer.b_std) ** 2, standard=std,
                               width=None if first else width, bias=layer.has_bias,
                               label=describe_layer(layer)))
            width = layer.out_dim
        elif isinstance(layer, Activation):
            dual = layer.dual
            slot = len(acts)
            acts.append(layer)
            label = describe_layer(layer)
            zero = dual.ntk_convention == "zero-a.e."
            key = (label, dual.method, str(dual.nngp_rho), str(dual.ntk_rho), zero)
            name = names.setdefault(key, f"dual_{len(names) + 1}_{_ident(layer.label)}")
            if dual.method == HERMITE:
                ops.append(ActOp(slot, label, HERMITE, dual.rule, zero_ntk=zero, hermite_slot=n_h, name=name))
                n_h += 1
            else:
                kd = sp.S.Zero if (zero and dual.ntk_rho is None) else dual.ntk_rho
                ops.append(ActOp(slot, label, dual.method, dual.rule, k=dual.nngp_rho, kdot=kd,
                                 zero_ntk=zero and dual.ntk_rho is None, name=name))
        else:
            raise ParameterError(f"the generated fully connected kernels cannot run layer {layer!r} "
                                 "(use the convolutional network kernels for Conv/pooling layers)")
    desc = "serial(" + ", ".join(describe_layer(l) for l in net.layers) + ")"
    return KernelSpec(ops=ops, description=desc, n_act=len(acts), n_hermite=n_h, activations=acts)
