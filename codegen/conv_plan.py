r"""What the convolutional targets share: the printed duals of a layer program's activations
and its grouping into stages (producer + activation + sink over the pixel pairs of one state),
with the storage layout of every plane.  :mod:`codegen.conv_numba` and :mod:`codegen.conv_cuda`
both emit from these, so neither target imports the other for them.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from dualcalc.program import ImageOp as Op, ImageProgram
from dualcalc.symbols import q1 as Q1, q2 as Q2, rho as RHO

from .printers import NumbaPrinter, prepare, s1 as S1, s2 as S2

# ---------------------------------------------------------------------------------------------
# printing duals, with the printers of the fully connected targets (codegen/printers.py)
@dataclass
class DualCode:
    """Printed dual of one activation: lines hoisted per x-pixel (they depend on q1, s1 only)
    and per-entry lines (q2, s2, c, rho known) ending with ``k_`` and ``kd_`` assigned."""

    hoist: list[str]
    body: list[str]
    uses_rho: bool
    kind: str  # "closed" or "hermite"
    zero_ntk: bool
    uses: frozenset = frozenset()


def _deps(expr, known: dict) -> frozenset:
    out = set()
    for s in expr.free_symbols:
        out |= known.get(s, {s})
    return frozenset(out)


def print_dual(act, want_ntk: bool, prefix: str, printer=None) -> DualCode:
    """The dual's lines for the generated kernels in the language of ``printer`` (a
    :class:`~codegen.printers.NumbaPrinter` by default, or a ``CudaPrinter``); the helpers
    the lines call are recorded in ``printer.helpers_used``."""
    dual = act.dual
    zero_ntk = dual.ntk_convention == "zero-a.e."
    if dual.method != "closed-form":
        return DualCode([], [], True, "hermite", zero_ntk, frozenset({Q1, Q2, S1, S2}))
    exprs = [prepare(dual.nngp_rho)]
    if want_ntk and not zero_ntk:
        exprs.append(prepare(dual.ntk_rho))
    syms = sp.numbered_symbols(prefix)
    repl, red = sp.cse(exprs, symbols=syms, optimizations="basic")
    p = printer if printer is not None else NumbaPrinter()
    known: dict = {}
    hoist, body = [], []
    for s, e in repl:
        d = _deps(e, known)
        known[s] = d
        line = p.statement(str(s), p.doprint(e))
        (hoist if d <= {Q1, S1} else body).append(line)
    body.append(p.statement("k_", p.doprint(red[0]), declare=False))
    if want_ntk:
        body.append(p.statement("kd_", p.doprint(sp.Float(0.0)) if zero_ntk else p.doprint(red[1]), declare=False))
    uses = frozenset().union(*(e.free_symbols for e in exprs))
    return DualCode(hoist, body, RHO in uses, "closed", zero_ntk, uses)


# ---------------------------------------------------------------------------------------------
# layouts and stages
@dataclass(frozen=True)
class Layout:
    """How one y-plane (h×w pixels) is stored: interior pixel (i, j) at
    (i + pt)·stride + j + pl in a plane of rows·stride numbers (zero padding around it)."""

    h: int
    w: int
    pt: int = 0
    pl: int = 0
    rows: int = 0
    stride: int = 0

    @property
    def size(self) -> int:
        return self.rows * self.stride

    @property
    def first(self) -> int:
        return self.pt * self.stride + self.pl

    @property
    def span(self) -> int:
        """From the first interior entry to one past the last."""
        return (self.h - 1) * self.stride + self.w

    @property
    def padded(self) -> bool:
        return self.rows != self.h or self.stride != self.w


def plain(h: int, w: int) -> Layout:
    return Layout(h, w, 0, 0, h, w)


def padded_for(op: Op) -> Layout:
    """The layout a SAME convolution reads: padding ph, pw before and f−1−p after."""
    return Layout(op.hin, op.win, op.ph, op.pw, op.hin + op.fh - 1, op.win + op.fw - 1)


def _is_same(op: Op) -> bool:
    return op.kind == "conv" and op.hout == op.hin and op.wout == op.win


@dataclass
class Stage:
    """producer (+ activation) (+ sink) over the pixel pairs of one state."""

    producer: str  # "input", "conv", "pool", "dense", "ident"
    pop: Op | None  # the producer's op (None for "input"/"ident")
    act_index: int | None  # op index of the activation applied to the planes
    sink: str  # "store", "pool", "flatten", "gap"
    sop: Op | None  # pool/flatten/gap op
    hin: int
    win: int
    ho: int  # size of the planes' state (after the producer)
    wo: int
    t_in: bool  # Θ is live on input
    t_out: bool  # Θ live on output
    lin: Layout | None = None  # stored input planes
    lprod: Layout | None = None  # the working plane rk
    lout: Layout | None = None  # stored output planes (store / pool sinks)
    patch_scale: float = 0.0  # "patch" producer: W²/(taps·C)
    split: bool = False  # conv producer reading row sums R (only the fh vertical taps are left)

    @property
    def out_shape(self) -> tuple[int, int]:
        if self.sink == "store":
            return self.ho, self.wo
        if self.sink == "pool":
            return self.sop.hout, self.sop.wout
        return 0, 0


def _group(prog: ImageProgram, fuse: bool, want_ntk: bool, start: int = 0, stop: int | None = None,
           t_live: bool = False, first_input: bool = True, patches: bool = False):
    """Stages for ops[start:stop] (spatial part) and the scalar tail ops, in order:
    a list of ("stage", Stage) and ("scalar", op_index) items, with layouts assigned.

    ``patches``: when the network starts with a convolution, its output for a pair comes from
    the matrix product of the two images' patch matrices, one row block of x-pixels at a
    time (a "patch" producer), instead of the input products followed by the filter sums."""
    ops = prog.ops
    stop = len(ops) if stop is None else stop
    items: list = []
    i = start
    if first_input and patches and ops and ops[0].kind == "conv":
        op = ops[0]
        st, i, t_live = _one_stage(ops, 1, stop, "patch", op, op.hin, op.win, op.hout, op.wout, fuse, want_ntk,
                                   t_live)
        st.patch_scale = op.w2 / (op.fh * op.fw * prog.channels)
        items.append(("stage", st))
    elif first_input:
        h, w = prog.height, prog.width
        st, i, t_live = _one_stage(ops, i, stop, "input", None, h, w, h, w, fuse, want_ntk, t_live)
        items.append(("stage", st))
    while i < stop:
        op = ops[i]
        if not op.spatial:
            items.append(("scalar", i))
            i += 1
            continue
        if op.kind in ("conv", "pool", "dense"):
            st, i, t_live = _one_stage(ops, i + 1, stop, op.kind, op, op.hin, op.win, op.hout, op.wout,
                                       fuse, want_ntk, t_live)
        else:  # an activation, or flatten / gap, on a stored state
            st, i, t_live = _one_stage(ops, i, stop, "ident", None, op.hin, op.win, op.hin, op.win,
                                       fuse, want_ntk, t_live)
        items.append(("stage", st))
    _assign_layouts([it for kind, it in items if kind == "stage"])
    return items


def _one_stage(ops, i, stop, producer, pop, hin, win, ho, wo, fuse, want_ntk, t_live):
    t_in = t_live
    if producer in ("conv", "dense", "patch"):
        t_live = want_ntk
    act_index = None
    if i < stop and ops[i].kind == "act" and (fuse or producer == "ident"):
        act_index = i
        i += 1
    sink, sop = "store", None
    if i < stop and ops[i].kind in ("pool", "flatten", "gap") and (fuse or (producer == "ident" and act_index is None)):
        sink, sop = ops[i].kind, ops[i]
        i += 1
    return Stage(producer, pop, act_index, sink, sop, hin, win, ho, wo, t_in, t_live), i, t_live


def _assign_layouts(stages: list[Stage]):
    for k, st in enumerate(stages):
        if st.producer in ("input", "patch"):
            st.lprod = plain(st.ho, st.wo)
        elif st.producer == "conv":
            st.lprod = st.lin if _is_same(st.pop) else Layout(st.ho, st.wo, 0, 0, st.ho, st.win)
        elif st.producer == "pool":
            st.lprod = plain(st.ho, st.wo)
        else:  # dense, ident: in place of the input's layout
            st.lprod = st.lin
        if st.sink in ("store", "pool"):
            h, w = st.out_shape
            nxt = stages[k + 1] if k + 1 < len(stages) else None
            if nxt is not None and nxt.producer == "conv" and _is_same(nxt.pop):
                st.lout = padded_for(nxt.pop)
            else:
                st.lout = plain(h, w)
            if nxt is not None:
                nxt.lin = st.lout
        if st.lin is None and st.producer not in ("input", "patch"):
            st.lin = plain(st.hin, st.win)
            if st.lprod is None:
                st.lprod = st.lin


def _span_of(st: Stage) -> int:
    """Loop length of the producer over the plane rk."""
    if st.producer in ("input", "pool", "patch"):
        return st.ho * st.wo
    return st.lprod.span


def _mean_of(st: Stage) -> float:
    """1 / the number of entries a flatten (pixel diagonal) or gap (all pixel pairs) averages."""
    return 1.0 / (st.ho * st.wo if st.sink == "flatten" else (st.ho * st.wo) ** 2)
