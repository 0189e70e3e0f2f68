r"""The Numba target: one ``@njit(parallel=True)`` kernel per network.

The generated module (see ``net.source("numba")``) holds

* the inline math it needs (:mod:`codegen.mathlib`: polynomial acos/asin/exp that vectorise,
  and the scalar bivariate normal CDF Φ₂ when a dual holds ``Phi2``),
* one function per activation's dual, ``dual_<layer>_<name>(q1, q2, s1, s2, c, rho)`` returning
  (k, k̇), printed from the SymPy closed form with common subexpressions shared,
* ``kernel(...)``: for a list of tiles (row range × column range) of the output, every entry
  (i, j) reads the Gram value ⟨x_i, y_j⟩ (already in the output buffer), runs all layers in
  registers with the per-point variances q_i, q_j (precomputed once, O(n·depth)) and writes
  K and Θ.  For K(X, X) only tiles on or above the diagonal are computed and each tile is then
  mirrored.  A Hermite-method activation splits the row into stages: the pair values go to
  small per-tile buffers, the series Σ_l r_l(q_i) r_l(q_j) ρ^l runs by Horner's rule over the
  row (inner loop over j: vectorised) from the per-point coefficient tables, and the next
  stage continues from the buffers.

:func:`run` drives it: panels of rows (``block_size``), one BLAS product per panel written
straight into the output, then the kernel over the panel's tiles; no other O(n1·n2) memory.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dualcalc.errors import BackendError, InputError
from dualcalc.dual import HERMITE

from . import cache, mathlib
import sympy as sp

from dualcalc.program import Affine, Normalize, Pointwise, Prod, Program, Sum

from .printers import NumbaPrinter, Pos, dual_body, q1 as Q1SYM, s1 as S1SYM

GENERATOR_VERSION = "numba-2"  # 2: reads the network program (registers, branches)
TILE_ROWS = 32
TILE_COLS = 512
#: LLVM may fuse a*b + c into one FMA (more accurate, never less); nothing else is relaxed.
FASTMATH = {"contract"}
#: Hermite Horner steps per pass over a row (the tables are padded with zeros to match).
HORNER_UNROLL = 4


@dataclass(frozen=True)
class GeneratedModule:
    source: str
    digest: str
    want_k: bool
    want_t: bool
    n_act: int
    n_hermite: int
    #: per-point precomputed subexpressions: row m of the H1/H2 arrays is f(q, s) of activation slot
    hoisted: tuple = ()  # ((slot, sympy expr in q1, s1), ...)


def _helpers_closure(names: set[str]) -> list[str]:
    """The helpers ``names`` need (transitively), in emission order (callees first)."""
    need, todo = set(), list(names)
    while todo:
        h = todo.pop()
        if h not in need:
            need.add(h)
            todo += mathlib.NUMBA_HELPER_DEPS.get(h, [])
    return [n for n in mathlib.NUMBA_HELPER_ORDER if n in need]


def _dual_function(op: Pointwise, body) -> list[str]:
    kind = "closed form" if op.method != HERMITE else "Hermite"
    extra = "".join(f", p1_{m}, p2_{m}" for m in range(len(body.hoisted)))
    lines = [
        f'@njit(cache=True, error_model="numpy", fastmath={FASTMATH!r}, inline="always")',
        f"def {op.name}(q1, q2, s1, s2, c, rho{extra}):",
        f'    """Activation {op.label}: dual by {kind} ({op.rule}).',
        "",
        "    (u, v) ~ N(0, [[q1, c], [c, q2]]), s = sqrt(q), rho = c/(s1 s2) clipped to [-1, 1].",
    ]
    for m, f in enumerate(body.hoisted):
        lines.append(f"    p1_{m}, p2_{m}: {sp.sstr(f).replace('s1', 'sqrt(q1)')} of each point (precomputed).")
    lines.append('    Returns k = E[σ(u)σ(v)] and kdot = E[σ\'(u)σ\'(v)]."""')
    for name, text in body.temps:
        lines.append(f"    {name} = {text}")
    lines.append(f"    k = {body.k}")
    lines.append(f"    kdot = {body.kdot}")
    lines.append("    return k, kdot")
    return lines


class _Emitter:
    """The kernel's text from the program: register r is the pair (c{r}, t{r}) of K and Θ in
    registers; a Hermite activation ends a stage (see :meth:`stages`)."""

    def __init__(self, prog: Program, want_k: bool, want_t: bool, hoist_rows: dict[int, list[int]]):
        self.prog, self.want_k, self.want_t = prog, want_k, want_t
        self.hoist_rows = hoist_rows  # activation slot -> rows of H1/H2 (its p1_m, p2_m)
        self.lines: list[str] = []
        # registers whose Θ is 0 whatever the entry (the input; after a delta σ'): not emitted
        self.tzero = [False] * len(prog.ops)
        self.tzero[0] = True

    def emit(self, depth: int, text: str) -> None:
        self.lines.append("    " * depth + text)

    def t(self, r: int) -> str:
        return "0.0" if self.tzero[r] else f"t{r}"

    # one operation inside the j loop
    def op(self, depth: int, r: int, op) -> None:
        e, want_t = self.emit, self.want_t
        if isinstance(op, Affine):
            x = op.src
            e(depth, f"# {op.label}")
            if want_t and op.standard:
                width = "d_in" if op.width is None else repr(float(op.width))
                terms = [f"{width} * c{x}"] + ([] if self.tzero[x] else [f"{op.w2!r} * t{x}"]) + \
                    (["1.0"] if op.bias else [])
                e(depth, f"t{r} = {' + '.join(terms)}  # standard parameterization")
            e(depth, f"c{r} = {op.w2!r} * c{x} + {op.b2!r}")
            if want_t and not op.standard:
                e(depth, f"t{r} = c{r}  # Θ starts at 0" if self.tzero[x] else f"t{r} = {op.w2!r} * t{x} + c{r}")
            return
        if isinstance(op, Normalize):
            a, x = op.slot, op.src
            e(depth, f"# {op.label}: K, Θ / sqrt((q_x + eps)(q_y + eps))")
            e(depth, f"nrm = r1_{a} * r2_{a}[jj]")
            e(depth, f"c{r} = c{x} * nrm")
            self._t(depth, r, None if self.tzero[x] else f"t{x} * nrm")
            return
        if isinstance(op, Sum):
            e(depth, f"# {op.label}: K, Θ summed over the branches")
            e(depth, f"c{r} = " + op.terms([f"c{s}" for s in op.srcs]))
            self._t(depth, r, op.terms([None if self.tzero[s] else f"t{s}" for s in op.srcs]))
            return
        if isinstance(op, Prod):
            e(depth, f"# {op.label}: K = prod K_i, Θ = sum_i Θ_i prod_(j != i) K_j")
            kk, tt = op.terms([f"c{s}" for s in op.srcs], [None if self.tzero[s] else f"t{s}" for s in op.srcs])
            self._t(depth, r, tt)
            e(depth, f"c{r} = {kk}")
            return
        a, x = op.slot, op.src
        e(depth, f"# {op.label}: closed form ({op.rule})")
        e(depth, f"q2 = q2_{a}[jj]")
        e(depth, f"s2 = s2_{a}[jj]")
        e(depth, f"rho = min(max(c{x} * r1_{a} * r2_{a}[jj], -1.0), 1.0)  # c/sqrt(q1 q2), clipped")
        extra = "".join(f", h1_{row}, h2_{row}[jj]" for row in self.hoist_rows.get(a, []))
        e(depth, f"k, kdot = {op.name}(q1_{a}, q2, s1_{a}, s2, c{x}, rho{extra})")
        if op.zero_ntk:
            self._t(depth, r, None, "  # σ' is a delta: no NTK passes")
        else:
            self._t(depth, r, None if self.tzero[x] else f"t{x} * kdot")
        e(depth, f"c{r} = k")

    def _t(self, depth: int, r: int, text: str | None, why: str = "") -> None:
        """Θ of register r (None: statically 0, nothing emitted)."""
        if text is None:
            self.tzero[r] = True
            if why and self.want_t:
                self.emit(depth, why.strip())
        elif self.want_t:
            self.emit(depth, f"t{r} = {text}")

    def row_invariants(self, depth: int) -> None:
        """Per-row scalars of the x point, and 1-D views of the y points' arrays over the row
        (loops index them from 0, which lets LLVM prove the indices non-negative and vectorise)."""
        for op in self.prog.slot_ops:
            a = op.slot
            if isinstance(op, Normalize):
                self.emit(depth, f"r1_{a}, r2_{a} = R1[{a}, i], R2[{a}, jlo:j1]")
                continue
            self.emit(depth, f"q1_{a}, s1_{a}, r1_{a} = Q1[{a}, i], S1[{a}, i], R1[{a}, i]")
            if op.method == HERMITE:
                self.emit(depth, f"r2_{a} = R2[{a}, jlo:j1]")
            else:
                self.emit(depth, f"q2_{a}, s2_{a}, r2_{a} = Q2[{a}, jlo:j1], S2[{a}, jlo:j1], R2[{a}, jlo:j1]")
                for row in self.hoist_rows.get(a, []):
                    self.emit(depth, f"h1_{row}, h2_{row} = H1[{row}, i], H2[{row}, jlo:j1]")

    def kernel(self) -> None:
        prog, e = self.prog, self.emit
        tables = []
        for op in prog.act_ops():
            if op.method == HERMITE:
                tables += [f"HX{op.hermite_slot}", f"HY{op.hermite_slot}"]
        args = ["K", "T", "tiles", "sym", "inv_d", "d_in", "Q1", "Q2", "S1", "S2", "R1", "R2", "H1", "H2"] + tables
        e(0, f'@njit(parallel=True, cache=True, error_model="numpy", fastmath={FASTMATH!r})')
        e(0, f"def kernel({', '.join(args)}):")
        outs = " and ".join(n for n, w in (("K (NNGP)", self.want_k), ("T (NTK)", self.want_t)) if w)
        doc = [
            '"""Fill the tiles of the outputs: all layers per entry, in registers.',
            "",
            f"Outputs: {outs}.  On entry the buffer {'K' if self.want_k else 'T'} holds the Gram product",
            "<x_i, y_j> over each tile (scaled here by inv_d = 1/d).  tiles[t] = (i0, i1, j0, j1);",
            "sym: K(X, X), only j > i is computed (the diagonal comes from the per-point plan) and",
            "each tile is mirrored.  Q1[a, i], S1[a, i], R1[a, i]: variance q, sqrt(q) and 1/sqrt(q)",
            "(0 where q = 0) of point i at slot a (an activation, or a LayerNorm with q + eps); Q2, S2,",
            "R2 for the y points; H1[m, i], H2: per-point subexpressions of the duals (see each dual's",
            "docstring); HXh (n1, degree+1) and HYh (degree+1, n2): Hermite tables r_l(q) of Hermite",
            "layer h.  Register r of the network's program is (c<r>, t<r>): K and Θ of the pair.",
            '"""',
        ]
        for line in doc:
            e(1, line)
        e(1, "for tile in prange(tiles.shape[0]):")
        e(2, "i0, i1, j0, j1 = tiles[tile, 0], tiles[tile, 1], tiles[tile, 2], tiles[tile, 3]")
        stages = self.stages()
        saved = sorted({s for _, _, keep in stages for s in keep})
        if len(stages) > 1:
            e(2, "w = j1 - j0")
            e(2, "rb = np.empty(w)  # rho of the pair entering a Hermite layer")
            e(2, "ak = np.empty(w)  # Horner accumulators of k and kdot")
            if self.want_t:
                e(2, "tb = np.empty(w)  # NTK of the pair entering a Hermite layer")
                e(2, "at = np.empty(w)")
            for s in saved:
                e(2, f"bc{s} = np.empty(w)  # register {s}, kept across a Hermite layer")
                if self.want_t:
                    e(2, f"bt{s} = np.empty(w)")
        e(2, "for i in range(i0, i1):")
        e(3, "jlo = max(j0, i + 1) if sym else j0")
        self.row_invariants(3)
        G = "K" if self.want_k else "T"
        if self.want_k:
            e(3, "Kr = K[i, jlo:j1]")
        if self.want_t:
            e(3, "Tr = T[i, jlo:j1]")
        restore: list[int] = []
        for si, (ops, herm, keep) in enumerate(stages):
            n_act = sum(isinstance(o, Pointwise) for _, o in ops)
            e(3, f"# -- stage {si + 1}: {n_act} activation(s) per entry in registers" +
              (f", then the Hermite series of {herm[1].label}" if herm is not None else ""))
            e(3, "for jj in range(j1 - jlo):")
            if si == 0:
                e(4, f"c0 = {G}r[jj] * inv_d  # input kernel <x, y>/d")
            else:
                r, prev = stages[si - 1][1]
                h, a = prev.hermite_slot, prev.slot
                for s in restore:
                    e(4, f"c{s} = bc{s}[jj]" + (f"; t{s} = bt{s}[jj]" if self.want_t and not self.tzero[s] else ""))
                e(4, f"# {prev.label}: k = sum_l r_l(q_i) r_l(q_j) rho^l,"
                     " kdot = sum_l l r_l(q_i) r_l(q_j) rho^(l-1) / sqrt(q_i q_j)")
                e(4, f"c{r} = ak[jj] * rb[jj] + hx0_{h} * hy0_{h}[jj]")
                if prev.zero_ntk:
                    self._t(4, r, None, "  # σ' is a delta: no NTK passes")
                else:
                    self._t(4, r, None if self.tzero[prev.src] else f"tb[jj] * (at[jj] * r1_{a} * r2_{a}[jj])")
            for r, op in ops:
                self.op(4, r, op)
            if herm is None:
                o = prog.output
                if self.want_k:
                    e(4, f"Kr[jj] = c{o}")
                if self.want_t:
                    e(4, f"Tr[jj] = {self.t(o)}")
                continue
            r, hop = herm
            a, h = hop.slot, hop.hermite_slot
            for s in keep:
                e(4, f"bc{s}[jj] = c{s}" + (f"; bt{s}[jj] = t{s}" if self.want_t and not self.tzero[s] else ""))
            restore = keep
            e(4, f"rb[jj] = min(max(c{hop.src} * r1_{a} * r2_{a}[jj], -1.0), 1.0)  # rho")
            e(4, "ak[jj] = 0.0")
            if self.want_t:
                if not self.tzero[hop.src]:
                    e(4, f"tb[jj] = t{hop.src}")
                e(4, "at[jj] = 0.0")
            e(3, f"# Horner over the degree, vectorised over the row: {hop.label}")
            e(3, f"# (tables padded with zeros to a degree divisible by {HORNER_UNROLL}; {HORNER_UNROLL} terms per pass)")
            e(3, f"for l in range(HY{h}.shape[0] - 1, 0, -{HORNER_UNROLL}):")
            for u in range(HORNER_UNROLL):
                lu = "l" if u == 0 else f"l - {u}"
                e(4, f"a{u} = HX{h}[i, {lu}]")
                if self.want_t:
                    e(4, f"b{u} = ({lu}) * a{u}")
                e(4, f"y{u} = HY{h}[{lu}, jlo:j1]")
            e(4, "for jj in range(j1 - jlo):")
            e(5, "r = rb[jj]")
            acc_k = "ak[jj]"
            acc_t = "at[jj]"
            for u in range(HORNER_UNROLL):
                acc_k = f"({acc_k} * r + a{u} * y{u}[jj])"
                acc_t = f"({acc_t} * r + b{u} * y{u}[jj])"
            if self.want_t:
                e(5, f"at[jj] = {acc_t[1:-1]}")
            e(5, f"ak[jj] = {acc_k[1:-1]}")
            e(3, f"hx0_{h}, hy0_{h} = HX{h}[i, 0], HY{h}[0, jlo:j1]")
        # mirror
        e(2, "if sym:  # K(X, X) is symmetric: copy the tile below the diagonal")
        e(3, "for j in range(max(j0, i0 + 1), j1):")
        e(4, "m = min(i1, j) - i0")
        if self.want_k:
            e(4, "Kc, Ks = K[j, i0:i0 + m], K[i0:i0 + m, j]")
        if self.want_t:
            e(4, "Tc, Ts = T[j, i0:i0 + m], T[i0:i0 + m, j]")
        e(4, "for ii in range(m):")
        if self.want_k:
            e(5, "Kc[ii] = Ks[ii]")
        if self.want_t:
            e(5, "Tc[ii] = Ts[ii]")

    def stages(self):
        """Split the program at Hermite activations: [(ops before, (r, hermite op) or None, kept)],
        ``kept`` the registers a later operation reads (or the output), stored in row buffers
        across the series."""
        prog = self.prog
        out, cur = [], []
        for r, op in enumerate(prog.ops):
            if r == 0:
                continue
            if isinstance(op, Pointwise) and op.method == HERMITE:
                keep = [s for s in range(r) if prog.last_use[s] > r]
                out.append((cur, (r, op), keep))
                cur = []
            else:
                cur.append((r, op))
        out.append((cur, None, []))
        return out


_GENERATED: dict = {}


def generate(spec: Program, get=("nngp", "ntk")) -> GeneratedModule:
    """The Numba module text of ``spec`` for the requested outputs (memoised per process:
    printing and common-subexpression elimination are not free)."""
    key = (spec.key, "nngp" in get, "ntk" in get)
    gen = _GENERATED.get(key)
    if gen is None:
        gen = _GENERATED[key] = _generate(spec, get)
    return gen


def _generate(spec: Program, get) -> GeneratedModule:
    want_k, want_t = "nngp" in get, "ntk" in get
    printer = NumbaPrinter()
    duals: list[str] = []
    bodies: dict[str, object] = {}
    hoist_rows: dict[int, list[int]] = {}
    hoisted: list = []
    for op in spec.act_ops():
        if op.method == HERMITE:
            continue
        if op.name not in bodies:
            bodies[op.name] = body = dual_body(op.k, op.kdot, printer, hoist=True)
            duals.append("")
            duals.extend(_dual_function(op, body))
        body = bodies[op.name]
        hoist_rows[op.slot] = list(range(len(hoisted), len(hoisted) + len(body.hoisted)))
        hoisted += [(op.slot, f) for f in body.hoisted]
    helpers = _helpers_closure(printer.helpers_used)
    em = _Emitter(spec, want_k, want_t, hoist_rows)
    em.kernel()
    outs = ", ".join(n for n, w in (("nngp", want_k), ("ntk", want_t)) if w)
    head = cache.banner("#", "dualcalc generated kernel (Numba).  Generated text: regenerate it, don't edit it.",
                        spec.description, get, GENERATOR_VERSION) + [
        "import math",
        "",
        "import numpy as np",
        "from numba import njit, prange",
    ]
    if "_exp" in helpers:
        head.append("")
        head.append("from codegen.numba_support import bits_to_f64")
    body = []
    if helpers:
        body += ["", "", "# -- inline math: polynomial forms the loop vectoriser can use (codegen/mathlib.py) --"]
        for h in helpers:
            body.extend(mathlib.NUMBA_HELPERS[h].rstrip("\n").split("\n"))
    if duals:
        body += ["", "", "# -- one function per activation's dual (common subexpressions of k and kdot shared) --"]
        body += duals
    body += ["", ""]
    body += em.lines
    text = "\n".join(head + body) + "\n"
    digest = cache.content_hash(GENERATOR_VERSION, text)
    return GeneratedModule(text, digest, want_k, want_t, spec.n_act, spec.n_hermite, tuple(hoisted))


_LAMBDIFIED: dict = {}


def hoisted_values(gen: GeneratedModule, qs: list[np.ndarray], n: int) -> np.ndarray:
    """The per-point rows H[m, i] = f_m(q_i) (float64), q from the activation slot of row m."""
    H = np.zeros((max(len(gen.hoisted), 1), n))
    for m, (slot, f) in enumerate(gen.hoisted):
        fn = _LAMBDIFIED.get(f)
        if fn is None:
            fn = _LAMBDIFIED[f] = sp.lambdify((Q1SYM, S1SYM), f,
                                              modules=[{"Pos": lambda v: np.maximum(v, 0.0)}, "numpy"])
        q = qs[slot]
        with np.errstate(all="ignore"):
            H[m] = np.broadcast_to(np.asarray(fn(q, np.sqrt(q)), dtype=np.float64), q.shape)
    return H


# ------------------------------------------------------------------------------------------------
# running
def tiles_for_panel(r0: int, r1: int, n2: int, sym: bool, tr: int = TILE_ROWS, tc: int = TILE_COLS) -> np.ndarray:
    """(i0, i1, j0, j1) tiles covering rows [r0, r1); for sym only those reaching j >= i."""
    out = []
    for i0 in range(r0, r1, tr):
        i1 = min(i0 + tr, r1)
        start = (i0 // tc) * tc if sym else 0
        for j0 in range(start, n2, tc):
            j1 = min(j0 + tc, n2)
            if sym and j1 <= i0:
                continue
            out.append((i0, i1, j0, j1))
    return np.array(out, dtype=np.int64).reshape(-1, 4)


def padded_tables(Rx: np.ndarray, Ry: np.ndarray | None, unroll: int = HORNER_UNROLL):
    """(HX, HY): HX (n1, D'+1) and HY (D'+1, n2) with D' the degree rounded up to ``unroll``."""
    deg = Rx.shape[1] - 1
    dp = -(-deg // unroll) * unroll
    HX = np.zeros((Rx.shape[0], dp + 1))
    HX[:, : deg + 1] = Rx
    if Ry is None:
        return HX, np.ascontiguousarray(HX.T)
    HY = np.zeros((dp + 1, Ry.shape[0]))
    HY[: deg + 1] = Ry.T
    return HX, HY


def gram_panel(X: np.ndarray, Y: np.ndarray, G: np.ndarray, r0: int, r1: int, sym: bool) -> None:
    """Write ⟨x_i, y_j⟩ for rows [r0, r1) into G (for sym only the columns j ≥ r0 are needed).

    K(X, X): the diagonal block by BLAS ``syrk`` (half the work; in place for a single panel,
    where G.T is the Fortran-ordered matrix BLAS writes — NumPy's ``X @ X.T`` also calls syrk
    but then copies the triangle, a strided pass over the whole matrix), the rest by ``gemm``
    straight into the output rows.
    """
    if not sym:
        np.matmul(X[r0:r1], Y.T, out=G[r0:r1])
        return
    from scipy.linalg import blas

    syrk = blas.ssyrk if G.dtype == np.float32 else blas.dsyrk
    A = X[r0:r1].T  # Fortran-ordered view, no copy
    if r0 == 0 and r1 == G.shape[0]:
        res = syrk(1.0, A, beta=0.0, c=G.T, trans=1, lower=1, overwrite_c=1)
        if not np.shares_memory(res, G):  # the wrapper had to copy: write the result back
            G[...] = res.T
        return
    block = syrk(1.0, A, trans=1, lower=1)  # (m × m), its lower triangle = upper of the block
    G[r0:r1, r0:r1] = block.T
    if r1 < G.shape[1]:
        np.matmul(X[r0:r1], X[r1:].T, out=G[r0:r1, r1:])


def default_block_size(n1: int, n2: int) -> int:
    """Rows per panel: about 2^24 entries per panel (a progress step of a fraction of a second)."""
    rows = max(TILE_ROWS, (1 << 24) // max(n2, 1))
    return int(min(n1, rows))


def _outputs(n1, n2, dtype, want_k, want_t, out):
    if out is None:
        K = np.empty((n1, n2), dtype=dtype) if want_k else None
        T = np.empty((n1, n2), dtype=dtype) if want_t else None
        return K, T
    if not isinstance(out, tuple | list) or len(out) != 2:
        raise InputError("out must be a pair (nngp_array, ntk_array), None for an output not requested")
    res = []
    for arr, want, name in ((out[0], want_k, "nngp"), (out[1], want_t, "ntk")):
        if not want:
            res.append(None)
            continue
        if not isinstance(arr, np.ndarray) or arr.shape != (n1, n2) or arr.dtype != dtype \
                or not arr.flags.c_contiguous or not arr.flags.writeable:
            raise InputError(f"out for {name} must be a writeable C-contiguous {np.dtype(dtype)} array of shape "
                             f"{(n1, n2)}")
        res.append(arr)
    return res[0], res[1]


def load(gen: GeneratedModule):
    try:
        return cache.load_module("numba", gen.digest, gen.source)
    except Exception as err:  # noqa: BLE001 - report which generated file failed
        raise BackendError(f"the generated Numba module failed to load ({type(err).__name__}: {err}); "
                           f"cache folder {cache.cache_dir()}") from err


def run(spec: Program, plan, X: np.ndarray, Y: np.ndarray | None, get, dtype, *, block_size=None,
        progress=None, out=None):
    """Exact kernels of ``spec`` with the generated Numba kernel; returns (K, T) (None if not asked)."""
    gen = generate(spec, get)
    mod = load(gen)
    sym = Y is None
    n1 = X.shape[0]
    Yd = X if sym else Y
    n2 = Yd.shape[0]
    dtype = np.dtype(dtype)
    K, T = _outputs(n1, n2, dtype, gen.want_k, gen.want_t, out)
    G = K if gen.want_k else T
    Kin = K if K is not None else np.empty((1, 1), dtype)
    Tin = T if T is not None else np.empty((1, 1), dtype)

    steps = plan.steps
    if steps:
        Q1 = np.ascontiguousarray(np.stack([s.qx for s in steps]))
        Q2 = Q1 if sym else np.ascontiguousarray(np.stack([s.qy for s in steps]))
    else:
        Q1 = np.zeros((1, n1))
        Q2 = Q1 if sym else np.zeros((1, n2))
    S1 = np.sqrt(Q1)
    S2 = S1 if sym else np.sqrt(Q2)
    R1, R2 = plan.inverse_roots()  # 1/√q (a zero variance at a Hermite layer: see there)
    H1 = hoisted_values(gen, list(Q1), n1)
    H2 = H1 if sym else hoisted_values(gen, list(Q2), n2)
    tables = []
    for s in steps:
        if s.hermite:
            tables += list(padded_tables(s.Rx, None if sym else s.Ry))
    d = X.shape[1]
    inv_d = 1.0 / d
    bs = default_block_size(n1, n2) if block_size is None else int(block_size)
    if bs < 1:
        raise InputError(f"block_size must be a positive number of rows, got {block_size!r}")
    panels = [(r0, min(r0 + bs, n1)) for r0 in range(0, n1, bs)]
    if sym:
        panels.reverse()  # mirrored values land in panels below, which are complete by then
    total = n1 * n2 if not sym else n1 * (n1 + 1) // 2
    show = (total >= 5e7) if progress is None else bool(progress)
    bar = None
    if show and len(panels) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="entries", unit_scale=True, desc="dualcalc kernel", leave=False)
    try:
        for r0, r1 in panels:
            gram_panel(X, Yd, G, r0, r1, sym)
            tiles = tiles_for_panel(r0, r1, n2, sym)
            mod.kernel(Kin, Tin, tiles, sym, inv_d, float(d), Q1, Q2, S1, S2, R1, R2, H1, H2, *tables)
            if sym:  # the diagonal: the points' own recursion (c = q, rho = 1 exactly)
                idx = np.arange(r0, r1)
                if K is not None:
                    K[idx, idx] = plan.qx_out[r0:r1]
                if T is not None:
                    T[idx, idx] = plan.tx_out[r0:r1]
            if bar is not None:
                bar.update((r1 - r0) * n2 if not sym else sum(n1 - i for i in range(r0, r1)))
    finally:
        if bar is not None:
            bar.close()
    return K, T
