r"""Generated Numba source for the exact CNNGP/CNTK of a convolutional network.

The generator reads the layer program of :func:`dualcalc.conv.image_program` (image sizes,
filter sizes, paddings and weights become literals in the source) and emits one module:

* ``pair_stage<k>`` functions — one x-row of a layer group.  For every x-pixel of the row
  the stage makes the *plane* of its covariances with all y-pixels from a producer (the
  first convolution from the product of the two images' patch matrices, made by the driver
  one row block at a time with BLAS; input products, convolution, pooling, dense), applies an activation to the plane while it is in L1 cache
  when one follows, and hands it to a sink (store, accumulate into the pooled state, or
  reduce for Flatten / GlobalAvgPool).  So conv → activation → pool is one pass over
  memory, and the post-activation state of the pair is never stored.  Planes that feed a
  SAME convolution are stored zero-padded, so a filter tap is one long contiguous shifted
  add that LLVM vectorises (no border tests in the inner loop).
* ``pair_pass`` — all layers for a list of image pairs.  The stages are interleaved row by
  row (:func:`schedule`: a row of a stage runs as soon as the rows of its input that it
  reads exist), so every stored state is a *ring* of a few x-rows (3 for a 3×3 SAME
  convolution) instead of all of them: for Myrtle-5 on 32×32 images about 2 MB per thread
  instead of ~46 MB, which keeps the pass in cache rather than in main memory.  It runs
  without the GIL, one call per worker thread, with buffers of its own.
* ``self_pass`` (closed-form duals) — each image with itself, stage by stage over full-size
  states, recording the pixel variances q at every activation (and so the per-pixel tables
  q, √q, 1/√q) and the diagonal of K(X, X); the same stage functions, so ρ is exactly 1 on
  each image's own pixel diagonal.  For Hermite duals the tables (with r_l(q)) come from the
  NumPy reference of :mod:`dualcalc.conv_kernel`.

Closed-form duals are printed from their SymPy expressions by the printer of the fully
connected target (:class:`codegen.printers.NumbaPrinter`: common subexpressions shared
between k and k̇, the x-pixel-only ones hoisted out of the row loop; acos/asin as the
polynomial helpers of :data:`RUNTIME`, exp and Φ₂ as those of :mod:`codegen.mathlib`); Hermite duals
run the series Σ_l r_l(q_x) r_l(q_y) ρ^l by Horner's rule from per-pixel tables.  The
printed duals and the grouping into stages are :mod:`codegen.conv_plan` (shared with the
CUDA target).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np

from dualcalc.program import ImageOp as Op, ImageProgram
from dualcalc.conv_reference import image_tables
from dualcalc.errors import BackendError
from dualcalc.symbols import q2 as Q2

from . import cache
from .conv_plan import S2, DualCode, Layout, Stage, _group, _is_same, _mean_of, _span_of, print_dual
from .printers import NumbaPrinter

GENERATOR_VERSION = "conv-numba-5"

#: Branch-free arc cosine / arc sine: asin(x) = x + x·z·g(z), z = x² on |x| ≤ 1/2, and the
#: half-angle reduction acos(a) = 2·asin(√((1−a)/2)) beyond, with g a degree-11 polynomial
#: fitted (relative least squares at Chebyshev nodes, 50 digits) on z ∈ [0, 1/4]; error about
#: 1 ulp (checked in the tests).  libm's acos is a call that stops LLVM from vectorising the
#: activation loops, and the polynomial needs no division.
ASIN_G = (0.1666666666666665, 0.07500000000020797, 0.04464285710336827, 0.03038194737068087,
          0.02237204751352192, 0.017355262221945347, 0.013929625916473681, 0.011875700165918232,
          0.007801943829663346, 0.016038559905076553, -0.010754253819189541, 0.02817305169670452)


def _horner(var: str, coeffs) -> str:
    out = repr(coeffs[-1])
    for c in coeffs[-2::-1]:
        out = f"{c!r} + {var} * ({out})"
    return out


RUNTIME = f"""
@njit(nogil=True, cache=True, fastmath={{'contract'}})
def _asin_zg(z):
    return z * ({_horner("z", ASIN_G)})


@njit(nogil=True, cache=True)
def _acos(x):
    a = abs(x)
    small = a <= 0.5
    zb = (1.0 - a) * 0.5
    r = _asin_zg(x * x if small else zb)
    s = math.sqrt(zb)
    big = 2.0 * (s + s * r)
    big = math.pi - big if x < 0.0 else big
    return (1.5707963267948966 - (x + x * r)) if small else big


@njit(nogil=True, cache=True)
def _asin(x):
    a = abs(x)
    small = a <= 0.5
    zb = (1.0 - a) * 0.5
    r = _asin_zg(x * x if small else zb)
    s = math.sqrt(zb)
    big = 1.5707963267948966 - 2.0 * (s + s * r)
    big = -big if x < 0.0 else big
    return (x + x * r) if small else big

"""


#: the helpers RUNTIME defines (the printer calls them by these names)
OWN_HELPERS = ("_acos", "_asin")


@dataclass
class Generated:
    source: str
    name: str
    prog: ImageProgram
    want_ntk: bool
    acts: list[int]  # op indices of activations, in order
    hermite: dict[int, bool]
    pair_dims: np.ndarray | None = None
    schedule: np.ndarray | None = None  # the pair pass's (stage, x-row) order
    rings: list[int] | None = None  # x-rows kept of each stage's output in the pair pass


# ---------------------------------------------------------------------------------------------
# emitters
class _W:
    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, indent: int, text: str = ""):
        self.lines.append("    " * indent + text if text else "")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _act_args(l: int, hermite: bool) -> list[str]:
    a = [f"qx{l}", f"sx{l}", f"ix{l}", f"qy{l}", f"sy{l}", f"iy{l}"]
    if hermite:
        a += [f"rx{l}", f"ry{l}"]
    return a


def _emit_entry_act(w: _W, ind: int, dc: DualCode, want_ntk: bool, y: dict, kvar: str,
                    tvar: str | None, rx: str | None = None, ry: str | None = None, nl: str | None = None):
    """Activation on one entry c = kvar (in/out), Θ tvar (in/out).  The x-side values q1, s1,
    i1_ (= 1/s1) and the hoisted lines are set; ``y`` maps "q", "s", "i" to the y-side
    expressions; ρ = c·i1_·i2_ (no division or square root per entry).  ``rx``/``ry``:
    Hermite tables ({} = degree index)."""
    if Q2 in dc.uses or dc.uses_rho:
        w(ind, f"q2 = {y['q']}")
    if S2 in dc.uses:
        w(ind, f"s2 = {y['s']}")
    w(ind, f"c = {kvar}")
    hermite_ntk = dc.kind == "hermite" and want_ntk and not dc.zero_ntk
    if dc.uses_rho or hermite_ntk:
        w(ind, f"isq_ = i1_ * {y['i']}")
    if dc.uses_rho:
        # an image's own pixel diagonal: c, q1, q2 are the same number, and ρ is exactly 1
        # (c·(1/√q)² may round to 1 − 2⁻⁵³, which would cost ~1e-8 through acos)
        w(ind, "rho = 1.0 if (c == q1 and c == q2) else c * isq_")
    if dc.uses_rho:
        w(ind, "rho = 1.0 if rho > 1.0 else (-1.0 if rho < -1.0 else rho)")
    if dc.kind == "closed":
        for line in dc.body:
            w(ind, line)
    else:
        w(ind, "acc = 0.0")
        if hermite_ntk:
            w(ind, "accd = 0.0")
        w(ind, f"for l_ in range({nl} - 1, 0, -1):")
        w(ind + 1, f"pr = {rx.format('l_')} * {ry.format('l_')}")
        w(ind + 1, "acc = acc * rho + pr")
        if hermite_ntk:
            w(ind + 1, "accd = accd * rho + l_ * pr")
        w(ind, f"k_ = acc * rho + {rx.format(0)} * {ry.format(0)}")
        if want_ntk:
            w(ind, "kd_ = accd * isq_" if hermite_ntk else "kd_ = 0.0")
    if want_ntk and tvar is not None:
        w(ind, f"{tvar} = {tvar} * kd_")
    w(ind, f"{kvar} = k_")


def _rows(st: Stage) -> int:
    """Number of x-rows a stage iterates (a pool sink drops the rows past the last window)."""
    return st.sop.hout * st.sop.fh if st.sink == "pool" else st.ho


def _out_rows(st: Stage) -> int:
    """Rows of the state a store / pool sink writes."""
    return st.sop.hout if st.sink == "pool" else st.ho


def _out_row(st: Stage, i: int) -> int:
    return i // st.sop.fh if st.sink == "pool" else i


def _needs(st: Stage, i: int) -> tuple[int, int]:
    """The rows [lo, hi] of the stored input state that x-row i of a stage reads."""
    p = st.pop
    if st.producer == "conv":
        lo, hi = i - p.ph, i + p.fh - 1 - p.ph
    elif st.producer == "pool":
        lo, hi = i * p.fh, i * p.fh + p.fh - 1
    else:
        lo = hi = i
    return max(lo, 0), min(hi, st.hin - 1)


def schedule(stages: list[Stage]) -> tuple[list[tuple[int, int]], list[int]]:
    """The pair pass's order of (stage, x-row) calls and the ring size (in rows) of every
    stage's output state.

    Depth first: a row of the deepest stage whose input rows are complete runs next, so a state
    is consumed as soon as it is made and only a few of its x-rows are live at once (a 3×3
    SAME convolution keeps 3).  The ring sizes are the most rows live at any point of that
    order, so row r can live in slot r % ring."""
    S = len(stages)
    rows = [_rows(s) for s in stages]
    done = [0] * S
    rings = [1] * S
    order: list[tuple[int, int]] = []

    def complete(k: int) -> int:  # output rows of stage k that are final
        return done[k] // stages[k].sop.fh if stages[k].sink == "pool" else done[k]

    while done[-1] < rows[-1]:
        for k in range(S - 1, -1, -1):
            if done[k] < rows[k] and (k == 0 or complete(k - 1) > _needs(stages[k], done[k])[1]):
                break
        else:  # pragma: no cover - every input row is eventually complete
            raise AssertionError("stage schedule stalled")
        order.append((k, done[k]))
        done[k] += 1
        for j in range(S - 1):
            if done[j]:
                hi = _out_row(stages[j], done[j] - 1)
                lo = _needs(stages[j + 1], done[j + 1])[0] if done[j + 1] < rows[j + 1] else hi
                rings[j] = max(rings[j], hi - lo + 1)
    return order, rings


def _emit_zero_pads(w: _W, ind: int, lo: Layout, h: int, arrays: list[str]):
    """Zero the padding of the plane at ``ob`` (the interior is written separately): the rows
    above with the left pad of the first row, the right pad of every row with the left pad of
    the next, and what follows the last row."""
    if lo.first:
        w(ind, f"for z in range({lo.first}):")
        for a in arrays:
            w(ind + 1, f"{a}[ob + z] = 0.0")
    if lo.stride > lo.w:
        w(ind, f"for i2 in range({h}):")
        w(ind + 1, f"for z in range({lo.stride - lo.w}):")
        for a in arrays:
            w(ind + 2, f"{a}[ob + (i2 + {lo.pt}) * {lo.stride} + {lo.pl + lo.w} + z] = 0.0")
    start = (h + lo.pt) * lo.stride + lo.pl
    if lo.size > start:
        w(ind, f"for z in range({lo.size - start}):")
        for a in arrays:
            w(ind + 1, f"{a}[ob + {start} + z] = 0.0")


def _mark_split(stages: list[Stage]):
    """A SAME convolution reading a stored state runs split: the state's store is followed by
    the horizontal part of the filter, once per x-row (:func:`_emit_hsum`), and the
    convolution keeps the fh vertical taps: fh + fw loads per entry instead of fh·fw, the fw
    of them from a one-row buffer that is in cache."""
    for prev, st in zip(stages, stages[1:]):
        st.split = st.producer == "conv" and _is_same(st.pop) and st.pop.fw > 1 and prev.sink == "store"


def _feeds_split(stages: list[Stage], k: int) -> bool:
    """Stage k's output is read by a split convolution (so its rows are summed after each store)."""
    return k + 1 < len(stages) and stages[k + 1].split


def _hsum_call(k: int, src: int | str, dst: int | str, T: bool, rin, rout) -> str:
    """Call of stage k's row sums on x-row i, from states (K, T){src} to (K, T){dst}; in the
    pair pass the source is the one-row buffer (Q, U){k}."""
    ks, ts = (f"Q{k}", f"U{k}") if src == "Q" else (f"K{src}", f"T{src}")
    arrays = f"{ks}, K{dst}, {ts}, T{dst}" if T else f"{ks}, K{dst}"
    return f"pair_hsum{k}(i, {arrays}, {rin}, {rout})"


def _emit_hsum(w: _W, name: str, prev: Stage, nxt: Stage, want_ntk: bool):
    """Row sums R of x-row i1 of a stored state for the split convolution ``nxt``:
    R[(i1, j1)][y] = Σ_b K[(i1, j1 + b − pw)][y + (0, b − pw)] (no term beyond the image's
    columns), in the same padded layout; the rows above and below the plane stay zero."""
    op, lo = nxt.pop, prev.lout
    W = prev.wo
    T = want_ntk and prev.t_out
    arrays = [("Kin", "Kout")] + ([("Tin", "Tout")] if T else [])
    w(0, "@njit(cache=True, nogil=True, error_model='numpy')")
    w(0, f"def {name}(i1, {', '.join(a for pair in arrays for a in pair)}, rin, rout):")
    w(1, f'"""Row sums (the {op.fw} horizontal taps of the next {op.fh}x{op.fw} convolution) of x-row i1, layout {lo}."""')
    w(1, f"for j1 in range({W}):")
    w(2, f"ib = (i1 % rin * {W} + j1) * {lo.size} + {lo.first}")
    w(2, f"ob = (i1 % rout * {W} + j1) * {lo.size}")
    tail = lo.size - lo.first - lo.span
    for src, dst in arrays:
        w(2, f"for z in range({lo.first}):")
        w(3, f"{dst}[ob + z] = 0.0")
        w(2, f"for z in range({tail}):")
        w(3, f"{dst}[ob + {lo.first + lo.span} + z] = 0.0")
    w(2, f"if j1 >= {op.pw} and j1 < {W - (op.fw - 1 - op.pw)}:")
    w(3, f"for t in range({lo.span}):")
    for src, dst in arrays:
        terms = " + ".join(f"{src}[ib + {(b - op.pw) * lo.size + (b - op.pw)} + t]" for b in range(op.fw))
        w(4, f"{dst}[ob + {lo.first} + t] = {terms}")
    w(2, "else:")
    w(3, f"for t in range({lo.span}):")
    for src, dst in arrays:
        w(4, f"{dst}[ob + {lo.first} + t] = 0.0")
    w(3, f"for b in range({op.fw}):")
    w(4, f"c1 = j1 + b - {op.pw}")
    w(4, f"if c1 < 0 or c1 >= {W}:")
    w(5, "continue")
    w(4, f"sh = (b - {op.pw}) * {lo.size + 1}")
    w(4, f"for t in range({lo.span}):")
    for src, dst in arrays:
        w(5, f"{dst}[ob + {lo.first} + t] += {src}[ib + sh + t]")
    w(0)


def _emit_stage(w: _W, name: str, st: Stage, prog: ImageProgram, duals: dict, want_ntk: bool):
    """One x-row ``i1`` of a stage: for every x-pixel of the row, produce the plane rk (and
    rt) of its covariances with all y-pixels, activate, sink.  Stored states are rings of
    x-rows: row r of the input in slot r % ``rin``, of the output in slot r % ``rout``
    (the pair pass streams the stages through small rings, the self pass runs each stage
    over all its rows with full-size ones).  Loop lengths inside a plane are run-time values
    (``nw``, ``nsp``) so that LLVM vectorises the loops instead of unrolling short constant
    loops into scalar code."""
    ops = prog.ops
    l = st.act_index
    dc = duals[l] if l is not None else None
    hermite = dc is not None and dc.kind == "hermite"
    T = want_ntk and st.t_out
    tin = want_ntk and st.t_in
    stores = st.sink in ("store", "pool")
    args = ["i1"] + (["xa", "xb"] if st.producer == "input" else ["g"] if st.producer == "patch"
                     else (["Kin", "Tin"] if tin else ["Kin"]))
    args += (["Kout", "Tout"] if T else ["Kout"]) if stores else []
    args += ["rk", "rt", "nw", "nsp", "rin", "rout"]
    if l is not None:
        args += _act_args(l, hermite)
    HO, WO, HIN, WIN = st.ho, st.wo, st.hin, st.win
    lp, li, lo = st.lprod, st.lin, st.lout
    desc = st.producer + (f" {st.pop.fh}x{st.pop.fw}" if st.producer in ("conv", "pool") else "")
    desc += (f" -> {ops[l].act.label}" if l is not None else "") + (f" -> {st.sink}" if st.sink != "store" else "")
    w(0, "@njit(cache=True, nogil=True, error_model='numpy')")
    w(0, f"def {name}({', '.join(args)}):")
    w(1, f'"""{desc}, x-row i1: {HIN}x{WIN} -> {HO}x{WO} pixels; plane layouts in {li}, work {lp}, out {lo}.')
    w(1, f'nw = {WO}, nsp = {_span_of(st)} (run-time values); states are rings of rin / rout x-rows."""')
    if st.sink == "pool":
        sp_ = st.sop
        row = sp_.wout * lo.size
        w(1, f"if i1 % {sp_.fh} == 0:  # the first input row of a pooled row: start that row at zero")
        w(2, f"ob = (i1 // {sp_.fh}) % rout * {row}")
        w(2, f"for z in range({row}):")
        w(3, "Kout[ob + z] = 0.0")
        if T:
            w(3, "Tout[ob + z] = 0.0")
    if st.sink in ("flatten", "gap"):
        w(1, "sk = 0.0")
        w(1, "st_ = 0.0")
    if hermite:
        w(1, f"nl{l} = rx{l}.shape[1]")
    w_lim = st.sop.wout * st.sop.fw if st.sink == "pool" else WO
    w(1, f"for j1 in range({w_lim}):")
    ind = 2
    w(ind, f"px = i1 * {WO} + j1")
    if l is not None:
        w(ind, f"q1 = qx{l}[px]")
        w(ind, f"s1 = sx{l}[px]")
        w(ind, f"i1_ = ix{l}[px]")
        for line in dc.hoist:
            w(ind, line)
    # ---- producer: the plane rk (and rt) in layout lp
    if st.producer == "patch":  # g = (patches of this row of x)(patches of y)ᵀ, made by the driver (BLAS)
        op = st.pop
        S = st.patch_scale
        w(ind, f"ob = j1 * {HO * WO}")
        w(ind, "for t in range(nsp):")
        w(ind + 1, f"kk = {S!r} * g[ob + t] + {op.b2!r}")
        w(ind + 1, "rk[t] = kk")
        if want_ntk:
            w(ind + 1, "rt[t] = kk")
    elif st.producer == "input":
        C = prog.channels
        w(ind, "for t in range(nsp):")
        w(ind + 1, "rk[t] = 0.0")
        for ch in range(C):
            w(ind, f"xc = xa[px, {ch}] * {1.0 / C!r}")
            w(ind, "for t in range(nsp):")
            w(ind + 1, f"rk[t] += xc * xb[{ch}, t]")
    elif st.producer == "conv":
        op = st.pop
        S = op.w2 / (op.fh * op.fw)
        t0 = lp.first
        # x-pixels whose whole filter window is inside the image: all taps in one pass
        ilo, ihi = op.ph, HIN - (op.fh - 1 - op.ph)
        jlo, jhi = op.pw, WIN - (op.fw - 1 - op.pw)
        # split: the input holds row sums over the filter's columns; only its rows are left
        fw_, pw_ = (1, 0) if st.split else (op.fw, op.pw)
        inside = f"i1 >= {ilo} and i1 < {ihi}" + ("" if st.split else f" and j1 >= {jlo} and j1 < {jhi}")
        w(ind, f"if {inside}:")
        taps = [(a_, b_) for a_ in range(op.fh) for b_ in range(fw_)]
        for a_ in range(op.fh):
            w(ind + 1, f"r{a_} = (i1 + {a_ - op.ph}) % rin * {WIN} + j1")
        for a_, b_ in taps:
            w(ind + 1, f"s{a_}_{b_} = (r{a_} + {b_ - pw_}) * {li.size} + {t0 + (a_ - op.ph) * li.stride + b_ - pw_}")
        w(ind + 1, "for t in range(nsp):")
        w(ind + 2, "kk = " + " + ".join(f"Kin[s{a_}_{b_} + t]" for a_, b_ in taps))
        w(ind + 2, f"kk = {S!r} * kk + {op.b2!r}")
        w(ind + 2, f"rk[{t0} + t] = kk")
        if want_ntk:
            if tin:
                w(ind + 2, "tt = " + " + ".join(f"Tin[s{a_}_{b_} + t]" for a_, b_ in taps))
                w(ind + 2, f"rt[{t0} + t] = {S!r} * tt + kk")
            else:
                w(ind + 2, f"rt[{t0} + t] = kk")
        w(ind, "else:")
        ind += 1
        w(ind, "for t in range(nsp):")
        w(ind + 1, f"rk[{t0} + t] = 0.0")
        if tin:
            w(ind + 1, f"rt[{t0} + t] = 0.0")
        w(ind, f"for a in range({op.fh}):")
        w(ind + 1, f"r1 = i1 + a - {op.ph}")
        w(ind + 1, f"if r1 < 0 or r1 >= {HIN}:")
        w(ind + 2, "continue")
        w(ind + 1, f"for b in range({fw_}):")
        w(ind + 2, f"c1 = j1 + b - {pw_}")
        w(ind + 2, f"if c1 < 0 or c1 >= {WIN}:")
        w(ind + 3, "continue")
        w(ind + 2, f"src = (r1 % rin * {WIN} + c1) * {li.size} + {t0} + (a - {op.ph}) * {li.stride} + b - {pw_}")
        w(ind + 2, "for t in range(nsp):")
        w(ind + 3, f"rk[{t0} + t] += Kin[src + t]")
        if tin:
            w(ind + 3, f"rt[{t0} + t] += Tin[src + t]")
        w(ind, "for t in range(nsp):")
        w(ind + 1, f"kk = {S!r} * rk[{t0} + t] + {op.b2!r}")
        w(ind + 1, f"rk[{t0} + t] = kk")
        if want_ntk:
            w(ind + 1, f"rt[{t0} + t] = {S!r} * rt[{t0} + t] + kk" if tin else f"rt[{t0} + t] = kk")
        ind -= 1
    elif st.producer == "pool":
        op = st.pop
        inv = 1.0 / (op.fh * op.fw) ** 2
        w(ind, "for t in range(nsp):")
        w(ind + 1, "rk[t] = 0.0")
        if tin:
            w(ind + 1, "rt[t] = 0.0")
        w(ind, f"for a1 in range({op.fh}):")
        w(ind + 1, f"for b1 in range({op.fw}):")
        w(ind + 2, f"src = ((i1 * {op.fh} + a1) % rin * {WIN} + j1 * {op.fw} + b1) * {li.size}")
        w(ind + 2, f"for i2 in range({HO}):")
        w(ind + 3, f"for a2 in range({op.fh}):")
        w(ind + 4, f"ri = src + (i2 * {op.fh} + a2 + {li.pt}) * {li.stride} + {li.pl}")
        w(ind + 4, f"for b2 in range({op.fw}):")
        w(ind + 5, "for j2 in range(nw):")
        w(ind + 6, f"rk[i2 * {WO} + j2] += Kin[ri + j2 * {op.fw} + b2]")
        if tin:
            w(ind + 6, f"rt[i2 * {WO} + j2] += Tin[ri + j2 * {op.fw} + b2]")
        w(ind, "for t in range(nsp):")
        w(ind + 1, f"rk[t] *= {inv!r}")
        if tin:
            w(ind + 1, f"rt[t] *= {inv!r}")
    elif st.producer in ("dense", "ident"):
        t0 = lp.first
        w(ind, f"ob = (i1 % rin * {WO} + j1) * {li.size} + {t0}")
        w(ind, "for t in range(nsp):")
        if st.producer == "dense":
            op = st.pop
            w(ind + 1, f"kk = {op.w2!r} * Kin[ob + t] + {op.b2!r}")
            w(ind + 1, f"rk[{t0} + t] = kk")
            if want_ntk:
                w(ind + 1, f"rt[{t0} + t] = {op.w2!r} * Tin[ob + t] + kk" if tin else f"rt[{t0} + t] = kk")
        else:
            w(ind + 1, f"rk[{t0} + t] = Kin[ob + t]")
            if tin:
                w(ind + 1, f"rt[{t0} + t] = Tin[ob + t]")
    # ---- activation on the interior of the plane
    if l is not None:
        w(ind, f"for i2 in range({HO}):")
        w(ind + 1, f"rb = (i2 + {lp.pt}) * {lp.stride} + {lp.pl}")
        w(ind + 1, f"yb = i2 * {WO}")
        w(ind + 1, "for j in range(nw):")
        ind2 = ind + 2
        w(ind2, "iy_ = yb + j")
        y = {"q": f"qy{l}[iy_]", "s": f"sy{l}[iy_]", "i": f"iy{l}[iy_]"}
        _emit_entry_act(w, ind2, dc, want_ntk, y, "rk[rb + j]", "rt[rb + j]" if T else None,
                        f"rx{l}[px, {{}}]", f"ry{l}[iy_, {{}}]", f"nl{l}")
    # ---- sink
    if st.sink == "store":
        w(ind, f"ob = (i1 % rout * {WO} + j1) * {lo.size}")
        if lo.padded:
            _emit_zero_pads(w, ind, lo, HO, ["Kout"] + (["Tout"] if T else []))
        w(ind, f"for i2 in range({HO}):")
        w(ind + 1, f"ro = ob + (i2 + {lo.pt}) * {lo.stride} + {lo.pl}")
        w(ind + 1, f"ri = (i2 + {lp.pt}) * {lp.stride} + {lp.pl}")
        w(ind + 1, "for j in range(nw):")
        w(ind + 2, "Kout[ro + j] = rk[ri + j]")
        if T:
            w(ind + 2, "Tout[ro + j] = rt[ri + j]")
    elif st.sink == "pool":
        sp_ = st.sop
        inv = 1.0 / (sp_.fh * sp_.fw) ** 2
        w(ind, f"pb = ((i1 // {sp_.fh}) % rout * {sp_.wout} + j1 // {sp_.fw}) * {lo.size}")
        w(ind, f"for I2 in range({sp_.hout}):")
        w(ind + 1, f"for J2 in range({sp_.wout}):")
        w(ind + 2, "acc = 0.0")
        if T:
            w(ind + 2, "acct = 0.0")
        w(ind + 2, f"for a2 in range({sp_.fh}):")
        w(ind + 3, f"ri = (I2 * {sp_.fh} + a2 + {lp.pt}) * {lp.stride} + J2 * {sp_.fw} + {lp.pl}")
        w(ind + 3, f"for b2 in range({sp_.fw}):")
        w(ind + 4, "acc += rk[ri + b2]")
        if T:
            w(ind + 4, "acct += rt[ri + b2]")
        w(ind + 2, f"po = pb + (I2 + {lo.pt}) * {lo.stride} + J2 + {lo.pl}")
        w(ind + 2, f"Kout[po] += acc * {inv!r}")
        if T:
            w(ind + 2, f"Tout[po] += acct * {inv!r}")
    elif st.sink == "flatten":
        w(ind, f"d_ = (i1 + {lp.pt}) * {lp.stride} + j1 + {lp.pl}")
        w(ind, "sk += rk[d_]")
        if T:
            w(ind, "st_ += rt[d_]")
    elif st.sink == "gap":
        w(ind, f"for i2 in range({HO}):")
        w(ind + 1, f"rb = (i2 + {lp.pt}) * {lp.stride} + {lp.pl}")
        w(ind + 1, "for j in range(nw):")
        w(ind + 2, "sk += rk[rb + j]")
        if T:
            w(ind + 2, "st_ += rt[rb + j]")
    # flatten / gap: this row's sums (the driver adds the rows and takes the mean)
    w(1, "return sk, st_" if st.sink in ("flatten", "gap") else "return 0.0, 0.0")
    w(0)


def _emit_scalar_op(w: _W, ind: int, op: Op, l: int, duals: dict, want_ntk: bool):
    """Dense or activation on the number state (k, t) after Flatten / GlobalAvgPool."""
    if op.kind == "dense":
        w(ind, f"k = {op.w2!r} * k + {op.b2!r}")
        if want_ntk:
            w(ind, f"t = {op.w2!r} * t + k")
    elif op.kind == "act":
        dc = duals[l]
        w(ind, f"q1 = qA{l}[a]")
        w(ind, f"s1 = sA{l}[a]")
        w(ind, f"i1_ = iA{l}[a]")
        for line in dc.hoist:
            w(ind, line)
        y = {"q": f"qB{l}[b]", "s": f"sB{l}[b]", "i": f"iB{l}[b]"}
        _emit_entry_act(w, ind, dc, want_ntk, y, "k", "t" if want_ntk else None,
                        f"rA{l}[a, {{}}]", f"rB{l}[b, {{}}]", f"rA{l}.shape[1]")


def _buffers(items) -> tuple[int, int]:
    """Sizes of the self pass's (full) state buffers and of the working planes."""
    state, plane = 1, 1
    for kind, st in items:
        if kind != "stage":
            continue
        plane = max(plane, st.lprod.size + 1)
        if st.lout is not None:
            h, w = st.out_shape
            state = max(state, h * w * st.lout.size)
        if st.lin is not None:
            state = max(state, st.hin * st.win * st.lin.size)
    return state, plane


def generate(prog: ImageProgram, want_ntk: bool = True, fuse: bool = True) -> Generated:
    """Generate the Numba module for a layer program (sizes fixed) and NTK on/off."""
    ops = prog.ops
    acts = prog.act_ops
    printer = NumbaPrinter()
    duals = {l: print_dual(ops[l].act, want_ntk, f"x{l}_", printer) for l in acts}
    hermite = {l: duals[l].kind == "hermite" for l in acts}
    w = _W()
    w(0, '"""Exact CNNGP/CNTK, generated by dualcalc (codegen/conv_numba.py) -- do not edit.')
    w(0)
    for i, op in enumerate(ops):
        desc = op.kind
        if op.kind == "conv":
            desc += f" {op.fh}x{op.fw} pad=({op.ph},{op.pw}) W^2={op.w2!r} b^2={op.b2!r}"
        elif op.kind == "dense":
            desc += f" W^2={op.w2!r} b^2={op.b2!r}"
        elif op.kind == "act":
            desc += f" {op.act.label} ({op.act.dual.method})"
        elif op.kind == "pool":
            desc += f" {op.fh}x{op.fw}"
        w(0, f"op {i}: {desc}: {op.hin}x{op.win} -> {op.hout}x{op.wout}")
    w(0, f'input {prog.height}x{prog.width}x{prog.channels}; ntk={want_ntk}; {GENERATOR_VERSION}"""')
    w(0, "import math")
    w(0, "import numpy as np")
    w(0, "from numba import njit")
    # the printer's _acos/_asin are RUNTIME's (Myrtle-5 ran ~10% slower with the
    # mathlib forms); any other helper the duals call (_exp, _phi2) is codegen/mathlib.py's
    if "_exp" in printer.helper_names(skip=OWN_HELPERS):
        w(0, "from codegen.numba_support import bits_to_f64")
    for line in RUNTIME.splitlines():
        w(0, line)
    for line in printer.helper_source(skip=OWN_HELPERS).splitlines():
        w(0, line)

    items = _group(prog, fuse, want_ntk, patches=True)
    stages = [it for kind, it in items if kind == "stage"]
    _mark_split(stages)
    order, rings = schedule(stages)
    dims = [v for st in stages for v in (st.wo, _span_of(st))] + [0]
    names = [f"pair_stage{k}" for k in range(len(stages))]
    for k, (st, nm) in enumerate(zip(stages, names)):
        _emit_stage(w, nm, st, prog, duals, want_ntk)
        if _feeds_split(stages, k):
            _emit_hsum(w, f"pair_hsum{k}", st, stages[k + 1], want_ntk)
    tails = [it for kind, it in items if kind == "scalar"]
    state, plane = _buffers(items)
    _emit_pair_driver(w, stages, names, tails, rings, prog, duals, want_ntk, plane)
    if all(duals[l].kind == "closed" for l in acts):
        _emit_self_driver(w, stages, names, tails, prog, duals, want_ntk, state, plane)

    src = w.text()
    name = "dualcalc_conv_" + hashlib.sha256(src.encode()).hexdigest()[:20]
    g = Generated(src, name, prog, want_ntk, acts, hermite)
    g.pair_dims = np.array(dims, dtype=np.int64)
    g.schedule = np.array(order, dtype=np.int64).reshape(-1, 2)
    g.rings = rings
    return g


def _tables(l: int, hermite: bool) -> list[str]:
    t = [f"qA{l}[a]", f"sA{l}[a]", f"iA{l}[a]", f"qB{l}[b]", f"sB{l}[b]", f"iB{l}[b]"]
    if hermite:
        t += [f"rA{l}[a]", f"rB{l}[b]"]
    return t


def _call(st: Stage, k: int, name: str, row: str, src: list[str], dst: list[str], rin, rout,
          want_ntk: bool, tables: dict) -> str:
    """Text of the call of stage k on x-row ``row``: input ``src`` (state names, or the
    images' arrays for the first stage), output ``dst`` (K, Θ state names)."""
    if st.producer == "input":
        args = ["A[a]", "BT[b]"]
    elif st.producer == "patch":
        args = ["g"]
    else:
        args = src[:1] + (src[1:] if want_ntk and st.t_in else [])
    if st.sink in ("store", "pool"):
        args += dst[:1] + (dst[1:] if want_ntk and st.t_out else [])
    args += ["rk", "rt", f"dims[{2 * k}]", f"dims[{2 * k + 1}]", str(rin), str(rout)]
    if st.act_index is not None:
        args += tables[st.act_index]
    return f"{name}({row}, {', '.join(args)})"


def _emit_diag(w: _W, name: str, st: Stage, prog: ImageProgram):
    """Pixel variances of the state a stage's activation sees, q[i] = K_xx[i, i], from the
    stored input state of an image with itself (or its patches, for the first convolution) —
    the producer's arithmetic on the diagonal entries only, in the same order, so q is
    bit-identical to the entries the stage makes and ρ is exactly 1 on the diagonal."""
    op, li = st.pop, st.lin
    HO, WO, HIN, WIN = st.ho, st.wo, st.hin, st.win
    w(0, "@njit(cache=True, nogil=True, error_model='numpy')")
    if st.producer == "patch":
        w(0, f"def {name}(i1, g, q):")
        w(1, f'"""Diagonal of x-row i1 of the first convolution ({HO}x{WO} pixels) from its row block g."""')
        w(1, f"for j1 in range({WO}):")
        w(2, f"px = i1 * {WO} + j1")
        w(2, f"q[px] = {st.patch_scale!r} * g[j1 * {HO * WO} + px] + {op.b2!r}")
        w(0)
        return
    w(0, f"def {name}(Kin, q):")
    w(1, f'"""Diagonal of the {st.producer} output ({HO}x{WO} pixels) from input layout {li}."""')
    w(1, f"for i1 in range({HO}):")
    w(2, f"for j1 in range({WO}):")
    ind = 3
    if st.producer == "conv":
        S = op.w2 / (op.fh * op.fw)
        fw_, pw_ = (1, 0) if st.split else (op.fw, op.pw)  # split: the input holds row sums
        taps = [(a_, b_) for a_ in range(op.fh) for b_ in range(fw_)]
        ilo, ihi = op.ph, HIN - (op.fh - 1 - op.ph)
        jlo, jhi = op.pw, WIN - (op.fw - 1 - op.pw)
        inside = f"i1 >= {ilo} and i1 < {ihi}" + ("" if st.split else f" and j1 >= {jlo} and j1 < {jhi}")
        w(ind, f"if {inside}:")
        for a_, b_ in taps:
            w(ind + 1, f"r1 = i1 + {a_ - op.ph}")
            w(ind + 1, f"c1 = j1 + {b_ - pw_}")
            w(ind + 1, f"d{a_}_{b_} = Kin[(r1 * {WIN} + c1) * {li.size} + {li.first} + r1 * {li.stride} + c1]")
        w(ind + 1, "kk = " + " + ".join(f"d{a_}_{b_}" for a_, b_ in taps))
        w(ind, "else:")
        w(ind + 1, "kk = 0.0")
        w(ind + 1, f"for a in range({op.fh}):")
        w(ind + 2, f"r1 = i1 + a - {op.ph}")
        w(ind + 2, f"if r1 < 0 or r1 >= {HIN}:")
        w(ind + 3, "continue")
        w(ind + 2, f"for b in range({fw_}):")
        w(ind + 3, f"c1 = j1 + b - {pw_}")
        w(ind + 3, f"if c1 < 0 or c1 >= {WIN}:")
        w(ind + 4, "continue")
        w(ind + 3, f"kk += Kin[(r1 * {WIN} + c1) * {li.size} + {li.first} + r1 * {li.stride} + c1]")
        w(ind, f"q[i1 * {WO} + j1] = {S!r} * kk + {op.b2!r}")
    elif st.producer == "pool":
        inv = 1.0 / (op.fh * op.fw) ** 2
        w(ind, "acc = 0.0")
        w(ind, f"for a1 in range({op.fh}):")
        w(ind + 1, f"for b1 in range({op.fw}):")
        w(ind + 2, f"src = ((i1 * {op.fh} + a1) * {WIN} + j1 * {op.fw} + b1) * {li.size}")
        w(ind + 2, f"for a2 in range({op.fh}):")
        w(ind + 3, f"ri = src + (i1 * {op.fh} + a2 + {li.pt}) * {li.stride} + {li.pl}")
        w(ind + 3, f"for b2 in range({op.fw}):")
        w(ind + 4, f"acc += Kin[ri + j1 * {op.fw} + b2]")
        w(ind, f"q[i1 * {WO} + j1] = acc * {inv!r}")
    else:  # dense / ident: the stored diagonal entry
        w(ind, f"v = Kin[(i1 * {WO} + j1) * {li.size} + {li.first} + i1 * {li.stride} + j1]")
        w(ind, f"q[i1 * {WO} + j1] = {op.w2!r} * v + {op.b2!r}" if st.producer == "dense" else
               f"q[i1 * {WO} + j1] = v")
    w(0)


def _emit_tail(w: _W, ind: int, stages: list[Stage], tails: list[int], prog, duals, want_ntk, self_pass: bool):
    """The mean of the last stage's row sums (flatten / gap), the scalar layers, the outputs."""
    last = stages[-1]
    if last.sink in ("flatten", "gap"):
        w(ind, f"k = k * {_mean_of(last)!r}")
        w(ind, f"t = t * {_mean_of(last)!r}")
    for it in tails:
        op = prog.ops[it]
        if self_pass and op.kind == "act":
            w(ind, f"qA{it}[a] = k")
            w(ind, f"sA{it}[a] = math.sqrt(k)")
            w(ind, f"iA{it}[a] = 1.0 / sA{it}[a] if sA{it}[a] > 0.0 else 0.0")
        lines = _W()
        _emit_scalar_op(lines, ind, op, it, duals, want_ntk)
        for line in lines.lines:
            w(0, line.replace("qB", "qA").replace("sB", "sA").replace("iB", "iA") if self_pass else line)
    w(ind, "outK[p] = k")
    w(ind, "outT[p] = t")


def _table_args(prog, duals, both: bool) -> list[str]:
    out = []
    for l in prog.act_ops:
        out += [f"qA{l}", f"sA{l}", f"iA{l}"] + ([f"qB{l}", f"sB{l}", f"iB{l}"] if both else [])
        if both and duals[l].kind == "hermite":
            out += [f"rA{l}", f"rB{l}"]
    return out


def _emit_patch_buffer(w: _W, ind: int, stages):
    """The row block g of the first convolution's patch products (one x-row of x-pixels
    against every y-pixel), when the network starts with a convolution."""
    st = stages[0]
    if st.producer == "patch":
        w(ind, f"g = np.zeros({st.wo * st.ho * st.wo})")
        w(ind, f"g2 = g.reshape(({st.wo}, {st.ho * st.wo}))")


def _patch_gemm(st: Stage, row: str, b: str) -> str:
    """g ← (patches of x-row ``row`` of image a)(patches of image ``b``)ᵀ: one BLAS call; the
    self pass and the pair pass make it with the same call, so their numbers are identical."""
    return f"np.dot(PA[a][{row} * {st.wo}:({row} + 1) * {st.wo}], PBT[{b}], g2)"


def _emit_run(w: _W, ind: int, st: Stage, call: str, b: str):
    """One row of a stage in a driver: the first convolution's row block (with image ``b``),
    the call, and for flatten / gap the row's sums added to (k, t)."""
    if st.producer == "patch":
        w(ind, _patch_gemm(st, "i", b))
    if st.sink in ("flatten", "gap"):
        w(ind, f"r0, r1 = {call}")
        w(ind, "k += r0")
        w(ind, "t += r1")
    else:
        w(ind, call)


def _emit_pair_driver(w: _W, stages, names, tails, rings, prog, duals, want_ntk, plane: int):
    """``pair_pass``: all layers for a list of image pairs, the stages interleaved row by row
    in the order ``sched`` (see :func:`schedule`) through one ring of x-rows per state."""
    w(0, "@njit(nogil=True, cache=True, error_model='numpy')")
    w(0, f"def pair_pass(A, BT, PA, PBT, ia, ib, dims, sched, {', '.join(_table_args(prog, duals, True))}, outK, outT):")
    w(1, '"""All layers for the image pairs (A[ia[p]], B[ib[p]]): A as (n, P, C), B transposed')
    w(1, 'as (n, C, P), PA / PBT the patch matrices (n, P, taps*C) / (n, taps*C, P) when the first')
    w(1, 'layer is a convolution.  The stages run row by row in the order sched (stage, x-row), so')
    w(1, 'each state lives in a ring of a few x-rows (sizes below) and stays in cache.  Runs without')
    w(1, 'the GIL: each worker thread calls it on its share of the pairs, with its own buffers."""')
    for k, st in enumerate(stages):
        if st.sink in ("store", "pool"):
            size = rings[k] * (st.sop.wout if st.sink == "pool" else st.wo) * st.lout.size
            w(1, f"K{k} = np.zeros({size})  # output of stage {k}: {rings[k]} of {_out_rows(st)} x-rows")
            if want_ntk and st.t_out:
                w(1, f"T{k} = np.zeros({size})")
            if _feeds_split(stages, k):  # the row before its row sums
                w(1, f"Q{k} = np.zeros({st.wo * st.lout.size})")
                if want_ntk and st.t_out:
                    w(1, f"U{k} = np.zeros({st.wo * st.lout.size})")
    w(1, f"rk = np.zeros({plane})")
    w(1, f"rt = np.zeros({plane})")
    _emit_patch_buffer(w, 1, stages)
    tables = {l: _tables(l, duals[l].kind == "hermite") for l in prog.act_ops}
    w(1, "for p in range(ia.shape[0]):")
    w(2, "a = ia[p]")
    w(2, "b = ib[p]")
    w(2, "k = 0.0")
    w(2, "t = 0.0")
    w(2, "for z in range(sched.shape[0]):")
    w(3, "s = sched[z, 0]")
    w(3, "i = sched[z, 1]")
    for k, (st, nm) in enumerate(zip(stages, names)):
        w(3, f"{'if' if k == 0 else 'elif'} s == {k}:")
        rin = rings[k - 1] if k else 1
        split_next = _feeds_split(stages, k)
        dst = [f"Q{k}", f"U{k}"] if split_next else [f"K{k}", f"T{k}"]
        call = _call(st, k, nm, "i", [f"K{k - 1}", f"T{k - 1}"], dst, rin, 1 if split_next else rings[k],
                     want_ntk, tables)
        _emit_run(w, 4, st, call, "b")
        if split_next:
            w(4, _hsum_call(k, "Q", k, want_ntk and st.t_out, 1, rings[k]))
    _emit_tail(w, 2, stages, tails, prog, duals, want_ntk, False)
    w(0)


def _emit_self_driver(w: _W, stages, names, tails, prog, duals, want_ntk, state, plane):
    """``self_pass``: every image with itself, stage by stage over full-size states, filling
    the per-pixel tables of every activation on the way (closed-form duals only) and
    returning K(x, x), Θ(x, x)."""
    dnames = {}
    for st, nm in zip(stages, names):
        if st.act_index is not None:
            dnames[nm] = nm + "_diag"
            _emit_diag(w, dnames[nm], st, prog)
    w(0, "@njit(nogil=True, cache=True, error_model='numpy')")
    w(0, f"def self_pass(A, BT, PA, PBT, ia, dims, {', '.join(_table_args(prog, duals, False))}, outK, outT):")
    w(1, '"""Images A[ia[p]] with themselves; fills the tables q, sqrt(q), 1/sqrt(q) of every')
    w(1, 'activation for those images (rows ia[p]) before the activation runs."""')
    w(1, f"K0 = np.zeros({state})")
    w(1, f"K1 = np.zeros({state})")
    if want_ntk:
        w(1, f"T0 = np.zeros({state})")
        w(1, f"T1 = np.zeros({state})")
    w(1, f"rk = np.zeros({plane})")
    w(1, f"rt = np.zeros({plane})")
    _emit_patch_buffer(w, 1, stages)
    w(1, "for p in range(ia.shape[0]):")
    w(2, "a = ia[p]")
    w(2, "b = a")
    w(2, "k = 0.0")
    w(2, "t = 0.0")
    tables = {l: [x.replace("B", "A") for x in _tables(l, False)] for l in prog.act_ops}
    cur = 0
    for k, (st, nm) in enumerate(zip(stages, names)):
        if st.act_index is not None:
            l = st.act_index
            if st.producer == "patch":
                w(2, f"for i in range({st.ho}):")
                w(3, _patch_gemm(st, "i", "a"))
                w(3, f"{dnames[nm]}(i, g, qA{l}[a])")
            else:
                w(2, f"{dnames[nm]}(K{cur}, qA{l}[a])")
            w(2, f"for z in range(qA{l}.shape[1]):")
            w(3, f"v = math.sqrt(qA{l}[a, z])")
            w(3, f"sA{l}[a, z] = v")
            w(3, f"iA{l}[a, z] = 1.0 / v if v > 0.0 else 0.0")
        nxt = 1 - cur
        rout = _out_rows(st) if st.sink in ("store", "pool") else 1
        call = _call(st, k, nm, "i", [f"K{cur}", f"T{cur}"], [f"K{nxt}", f"T{nxt}"], st.hin, rout, want_ntk,
                     tables)
        w(2, f"for i in range({_rows(st)}):")
        _emit_run(w, 3, st, call, "a")
        if st.sink not in ("flatten", "gap"):
            if _feeds_split(stages, k):  # row sums back into the first buffer
                rows = _out_rows(st)
                w(2, f"for i in range({rows}):")
                w(3, _hsum_call(k, nxt, cur, want_ntk and st.t_out, rows, rows))
            else:
                cur = nxt
    _emit_tail(w, 2, stages, tails, prog, duals, want_ntk, True)
    w(0)


# ---------------------------------------------------------------------------------------------
# compile and cache
def load(gen: Generated):
    """Import the generated module (written once, atomically, under the cache folder so that
    Numba can cache the machine code beside it: :func:`codegen.cache.load_module`)."""
    try:
        return cache.load_module("conv_numba", gen.name.rpartition("_")[2], gen.source)
    except Exception as e:  # pragma: no cover - a generator bug
        raise BackendError(f"the generated Numba module {gen.name} failed to load: {e}") from e


# ---------------------------------------------------------------------------------------------
# running it


def default_threads() -> int:
    env = os.environ.get("DUALCALC_NUM_THREADS") or os.environ.get("NUMBA_NUM_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _in_threads(fn, n: int, threads: int):
    """Call fn(lo, hi) on `threads` contiguous parts of range(n) at once (fn releases the GIL).
    BLAS (the first layer's row-block products) runs single-threaded inside: the parallelism
    is over pairs, and nested BLAS threads would only spin against the workers."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        _in_threads_raw(fn, n, threads)


def _in_threads_raw(fn, n: int, threads: int):
    threads = max(1, min(threads, n))
    cuts = np.linspace(0, n, threads + 1).round().astype(int)
    parts = [(int(cuts[i]), int(cuts[i + 1])) for i in range(threads) if cuts[i + 1] > cuts[i]]
    if len(parts) == 1:
        fn(*parts[0])
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(parts)) as ex:
        for f in [ex.submit(fn, lo, hi) for lo, hi in parts]:
            f.result()


def image_patches(prog: ImageProgram, A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first convolution's patch matrices (n, P_out, taps·C) (zero padding for SAME) and
    their transposes (n, taps·C, P_out): each entry of a pair's first layer is one dot product
    of a row of the first with a column of the second.  Dummies when the first layer is no conv."""
    op = prog.ops[0] if prog.ops else None
    if op is None or op.kind != "conv":
        z = np.zeros((A.shape[0], 1, 1))
        return z, z
    n, H, W, C = A.shape
    same = op.hout == op.hin and op.wout == op.win
    Ap = np.pad(A, ((0, 0), (op.ph, op.fh - 1 - op.ph), (op.pw, op.fw - 1 - op.pw), (0, 0))) if same else A
    cols = [Ap[:, a:a + op.hout, b:b + op.wout, :] for a in range(op.fh) for b in range(op.fw)]
    P = np.ascontiguousarray(np.stack(cols, axis=3).reshape(n, op.hout * op.wout, op.fh * op.fw * C))
    return P, np.ascontiguousarray(P.transpose(0, 2, 1))


def run_self(gen: Generated, mod, A: np.ndarray, threads: int | None = None):
    """Each image with itself through the generated ``self_pass`` (closed-form duals):
    (K(x, x) (n,), Θ(x, x) (n,), tables {op index: (q, √q, 1/√q, None)})."""
    n = A.shape[0]
    ops = gen.prog.ops
    tables, args = {}, []
    for l in gen.acts:
        shape = (n, ops[l].hin * ops[l].win) if ops[l].spatial else (n,)
        t = (np.zeros(shape), np.zeros(shape), np.zeros(shape))
        tables[l] = (*t, None)
        args += list(t)
    A2 = np.ascontiguousarray(A.reshape(n, -1, A.shape[-1]))
    AT = np.ascontiguousarray(A2.transpose(0, 2, 1))
    ia = np.arange(n, dtype=np.int64)
    outK, outT = np.empty(n), np.empty(n)
    PA, PAT = image_patches(gen.prog, A)
    _in_threads(lambda lo, hi: mod.self_pass(A2, AT, PA, PAT, ia[lo:hi], gen.pair_dims, *args, outK[lo:hi],
                                             outT[lo:hi]), n, threads or default_threads())
    return outK, outT, tables


def _self(prog, gen, mod, A, want_ntk, chunk, threads):
    if hasattr(mod, "self_pass"):
        K, T, tab = run_self(gen, mod, A, threads)
        return K, (T if want_ntk else np.zeros_like(T)), tab
    return image_tables(prog, A, want_ntk, chunk)


def _pad_pair(RA, RB):
    L = max(RA.shape[-1], RB.shape[-1])
    pad = lambda R: np.concatenate([R, np.zeros(R.shape[:-1] + (L - R.shape[-1],))], axis=-1) if R.shape[-1] < L else R
    return np.ascontiguousarray(pad(RA)), np.ascontiguousarray(pad(RB))


def run_pairs(gen: Generated, mod, A, B, tabA, tabB, ia, ib, threads: int | None = None):
    """(K, Θ) of the pairs (A[ia[p]], B[ib[p]]), split over ``threads`` threads."""
    args = []
    for l in gen.acts:
        qa, sa, iaa, ra = tabA[l]
        qb, sb, ibb, rb = tabB[l]
        args += [qa, sa, iaa, qb, sb, ibb]
        if gen.hermite[l]:
            ra, rb = _pad_pair(ra, rb)
            args += [ra, rb]
    outK = np.empty(len(ia))
    outT = np.empty(len(ia))
    A2 = np.ascontiguousarray(A.reshape(A.shape[0], -1, A.shape[-1]))
    BT = np.ascontiguousarray(B.reshape(B.shape[0], -1, B.shape[-1]).transpose(0, 2, 1))
    ia = np.ascontiguousarray(ia, dtype=np.int64)
    ib = np.ascontiguousarray(ib, dtype=np.int64)
    PA, PAT = image_patches(gen.prog, A)
    PBT = PAT if B is A else image_patches(gen.prog, B)[1]
    _in_threads(lambda lo, hi: mod.pair_pass(A2, BT, PA, PBT, ia[lo:hi], ib[lo:hi], gen.pair_dims, gen.schedule,
                                             *args, outK[lo:hi], outT[lo:hi]), len(ia), threads or default_threads())
    return outK, outT


def numba_conv_kernel(prog: ImageProgram, X: np.ndarray, Y: np.ndarray | None, get=("nngp", "ntk"),
                      chunk: int = 8, block: int = 4096, threads: int | None = None):
    """Exact kernel through the generated Numba module (see :mod:`dualcalc.conv_kernel`).

    ``chunk``: images per batch of the self pass (their P×P states are held at once);
    ``block``: pairs per call; ``threads``: worker threads (default: the usable cores).
    """
    want_ntk = "ntk" in get
    gen = generate(prog, want_ntk)
    mod = load(gen)
    n1 = X.shape[0]
    Kx, Tx, tabX = _self(prog, gen, mod, X, want_ntk, chunk, threads)
    if Y is None:
        iu, ju = np.triu_indices(n1, k=1)
        K = np.empty((n1, n1))
        T = np.empty((n1, n1))
        K[np.arange(n1), np.arange(n1)] = Kx
        T[np.arange(n1), np.arange(n1)] = Tx
        for s in range(0, len(iu), block):
            a, b = iu[s:s + block], ju[s:s + block]
            k, t = run_pairs(gen, mod, X, X, tabX, tabX, a, b, threads)
            K[a, b] = k
            K[b, a] = k
            T[a, b] = t
            T[b, a] = t
    else:
        n2 = Y.shape[0]
        _, _, tabY = _self(prog, gen, mod, Y, False, chunk, threads)
        ia = np.repeat(np.arange(n1), n2)
        ib = np.tile(np.arange(n2), n1)
        K = np.empty(n1 * n2)
        T = np.empty(n1 * n2)
        for s in range(0, len(ia), block):
            k, t = run_pairs(gen, mod, X, Y, tabX, tabY, ia[s:s + block], ib[s:s + block], threads)
            K[s:s + block] = k
            T[s:s + block] = t
        K = K.reshape(n1, n2)
        T = T.reshape(n1, n2)
    return (K if "nngp" in get else None), (T if want_ntk else None)


# ---------------------------------------------------------------------------------------------
# the CNTK sketch's convolution: shifted copies concatenated and count-sketched in one pass
_SCATTER_SRC = '''"""Convolution of per-pixel features with a phase count sketch of the concatenation
(dualcalc.sketch.conv_sketch), written by codegen/conv_numba.py."""
from numba import njit


@njit(cache=True, nogil=True)
def conv_scatter(F, da, db, hb, ph, out):
    """out[n, i, j, hb[t, c]] += ph[t, c] * F[n, i + da[t], j + db[t], c] over the taps t
    whose source pixel lies inside the image (zero padding); out is (n, Ho, Wo, m)."""
    nb, H, W, d = F.shape
    Ho, Wo = out.shape[1], out.shape[2]
    for n in range(nb):
        for i in range(Ho):
            for j in range(Wo):
                for t in range(da.shape[0]):
                    ii = i + da[t]
                    jj = j + db[t]
                    if ii < 0 or ii >= H or jj < 0 or jj >= W:
                        continue
                    for c in range(d):
                        out[n, i, j, hb[t, c]] += ph[t, c] * F[n, ii, jj, c]
'''


def conv_scatter():
    """The compiled scatter kernel (cached beside its source like the generated modules)."""
    gen = Generated(_SCATTER_SRC, "dualcalc_conv_scatter_" + hashlib.sha256(_SCATTER_SRC.encode()).hexdigest()[:16],
                    None, False, [], {})
    return load(gen).conv_scatter
