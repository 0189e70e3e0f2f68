r"""Generated CUDA C (compiled through CuPy/NVRTC) for the exact CNNGP/CNTK of a convolutional network.

The same layer groups ("stages") and plane layouts as the Numba target
(:mod:`codegen.conv_numba`): a stage makes, for one x-pixel of one image pair, the plane of its
covariances with all y-pixels (producer), activates it and sinks it (store / pool /
Flatten / GlobalAvgPool).  On the GPU one *thread block* does one (x-pixel, pair): the plane
lives in shared memory, the block's threads stride over its entries, and phases are separated
by ``__syncthreads()``; pooled and reduced results are accumulated with ``atomicAdd``.  A last
``tail`` kernel (one thread per pair) runs the layers after Flatten / GlobalAvgPool.  Pairs go
in batches whose P×P states live in device memory (4 buffers of batch × state numbers).

The kernels never carry thread-private state across a ``__syncthreads()``: every phase is a
loop ``for (t = threadIdx.x; t < n; t += blockDim.x)``.  Hence the very same source, compiled
by a C++ compiler with ``-DDC_CPU_EMULATION`` (one thread per block, blocks in sequence, a
few macros), computes the same numbers on the CPU — which is how the tests check the CUDA
source where no GPU is available (:func:`emulator`).

The pixel variance tables (q, √q, 1/√q, and r_l(q) for Hermite duals) come from the images'
own recursions on the CPU (:mod:`codegen.conv_numba`), O(n·P²), and are copied to the device.
"""
from __future__ import annotations

import ctypes
import hashlib
import threading
from dataclasses import dataclass, field

import numpy as np

from dualcalc.program import ImageProgram
from dualcalc.symbols import q2 as Q2

from .cuda_env import (CXX_STD, DEFAULT_ARCH, compile_for_cpu, compile_ptx as nvrtc_ptx,  # noqa: F401 - cxx_compiler
                       cxx_compiler, gpu_available, require_gpu)
from .conv_plan import S2, DualCode, _group, _span_of, print_dual
from .printers import CudaPrinter

GENERATOR_VERSION = "conv-cuda-1"
THREADS = 128


#: the one GPU probe (:func:`codegen.cuda_env.gpu_available`) under this module's old name
cuda_available = gpu_available


@dataclass
class CudaGenerated:
    source: str
    name: str
    prog: ImageProgram
    want_ntk: bool
    stages: list = field(default_factory=list)  # (kernel name, Stage, state sizes)
    tail_args: list = field(default_factory=list)  # table names of the tail kernel, in order
    acts: list = field(default_factory=list)
    hermite: dict = field(default_factory=dict)
    state: int = 1


class _C:
    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, ind: int, text: str = ""):
        self.lines.append("    " * ind + text if text else "")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


PRELUDE = r"""
#ifdef DC_CPU_EMULATION
/* the CUDA source on the CPU: one thread per block, blocks in sequence (see codegen/conv_cuda.py) */
#include <math.h>
struct dc_dim3 { unsigned x, y, z; };
static dc_dim3 blockIdx, threadIdx, blockDim, gridDim;
#define __global__
#define __device__ static inline
#define __forceinline__
#define __shared__ static
#define __restrict__
#define __syncthreads()
static inline double atomicAdd(double* p, double v) { double o = *p; *p = o + v; return o; }
#endif
"""


def _entry_act(w: _C, ind: int, dc: DualCode, want_ntk: bool, y: dict, kvar: str, tvar: str | None,
               rx: str | None, ry: str | None, nl: str):
    """C version of codegen.conv_numba._emit_entry_act (same formulas, same ρ = 1 rule)."""
    w(ind, "{")
    ind += 1
    if Q2 in dc.uses or dc.uses_rho:
        w(ind, f"const double q2 = {y['q']};")
    if S2 in dc.uses:
        w(ind, f"const double s2 = {y['s']};")
    w(ind, f"const double c = {kvar};")
    hermite_ntk = dc.kind == "hermite" and want_ntk and not dc.zero_ntk
    if dc.uses_rho or hermite_ntk:
        w(ind, f"const double isq_ = i1_ * {y['i']};")
    if dc.uses_rho:
        w(ind, "double rho = (c == q1 && c == q2) ? 1.0 : c * isq_;")
        w(ind, "rho = rho > 1.0 ? 1.0 : (rho < -1.0 ? -1.0 : rho);")
    w(ind, "double k_, kd_;")
    if dc.kind == "closed":
        for line in dc.body:
            w(ind, line)
    else:
        w(ind, "double acc = 0.0, accd = 0.0;")
        w(ind, f"for (int l_ = {nl} - 1; l_ > 0; --l_) {{")
        w(ind + 1, f"const double pr = {rx.format('l_')} * {ry.format('l_')};")
        w(ind + 1, "acc = acc * rho + pr;")
        if hermite_ntk:
            w(ind + 1, "accd = accd * rho + l_ * pr;")
        w(ind, "}")
        w(ind, f"k_ = acc * rho + {rx.format(0)} * {ry.format(0)};")
        w(ind, "kd_ = accd * isq_;" if hermite_ntk else "kd_ = 0.0;")
    if not want_ntk:
        w(ind, "(void)kd_;")
    if want_ntk and tvar is not None:
        w(ind, f"{tvar} = {tvar} * kd_;")
    w(ind, f"{kvar} = k_;")
    ind -= 1
    w(ind, "}")


STAGE_PARAMS = [("Kin", "const double*"), ("Tin", "const double*"), ("Kout", "double*"), ("Tout", "double*"),
                ("A", "const double*"), ("BT", "const double*"), ("ia", "const long long*"),
                ("ib", "const long long*"), ("qA", "const double*"), ("sA", "const double*"),
                ("iA", "const double*"), ("qB", "const double*"), ("sB", "const double*"),
                ("iB", "const double*"), ("rA", "const double*"), ("rB", "const double*"), ("nl", "int"),
                ("kacc", "double*"), ("tacc", "double*"), ("s_in", "long long"), ("s_out", "long long")]


def _params(params) -> str:
    return ", ".join(f"{t} {'__restrict__ ' if t.endswith('*') else ''}{n}" for n, t in params)


def _emit_stage(w: _C, name: str, st, prog: ImageProgram, duals: dict, want_ntk: bool):
    l = st.act_index
    dc = duals[l] if l is not None else None
    T = want_ntk and st.t_out
    tin = want_ntk and st.t_in
    HO, WO, HIN, WIN = st.ho, st.wo, st.hin, st.win
    lp, li, lo = st.lprod, st.lin, st.lout
    P0 = prog.pixels
    C = prog.channels
    h_lim, w_lim = HO, WO
    if st.sink == "pool":
        h_lim, w_lim = st.sop.hout * st.sop.fh, st.sop.wout * st.sop.fw
    nsp = _span_of(st)
    w(0, f"/* {st.producer}" + (f" -> {prog.ops[l].act.label}" if l is not None else "") +
      f" -> {st.sink}: {HIN}x{WIN} -> {HO}x{WO}; grid ({h_lim * w_lim} x-pixels, pairs) */")
    w(0, f'extern "C" __global__ void {name}({_params(STAGE_PARAMS)})')
    w(0, "{")
    w(1, f"__shared__ double rk[{lp.size + 1}];")
    w(1, f"__shared__ double rt[{lp.size + 1}];")
    w(1, "const long long p = blockIdx.y;")
    w(1, "const long long a = ia[p], b = ib[p];")
    w(1, f"const int px_ = blockIdx.x, i1 = px_ / {w_lim}, j1 = px_ % {w_lim};")
    w(1, f"const int px = i1 * {WO} + j1;")
    w(1, "const int tid = threadIdx.x, nth = blockDim.x;")
    w(1, "const double* K_ = Kin + p * s_in;")
    w(1, "const double* T_ = Tin + p * s_in;")
    w(1, "(void)K_; (void)T_; (void)rt; (void)a; (void)b;")
    if l is not None:
        P = HO * WO
        w(1, f"const double q1 = qA[a * {P} + px], s1 = sA[a * {P} + px], i1_ = iA[a * {P} + px];")
        w(1, "(void)q1; (void)s1; (void)i1_;")
        for line in dc.hoist:
            w(1, line)
    # ---- producer
    if st.producer == "input":
        w(1, f"const double* xa = A + a * {P0 * C};")
        w(1, f"const double* xb = BT + b * {P0 * C};")
        w(1, f"for (int t = tid; t < {nsp}; t += nth) {{")
        w(2, "double acc = 0.0;")
        for ch in range(C):
            w(2, f"acc += (xa[px * {C} + {ch}] * {1.0 / C!r}) * xb[{ch} * {P0} + t];")
        w(2, "rk[t] = acc;")
        w(1, "}")
    elif st.producer == "conv":
        op = st.pop
        S = op.w2 / (op.fh * op.fw)
        t0 = lp.first
        ilo, ihi = op.ph, HIN - (op.fh - 1 - op.ph)
        jlo, jhi = op.pw, WIN - (op.fw - 1 - op.pw)
        taps = [(a_, b_) for a_ in range(op.fh) for b_ in range(op.fw)]
        w(1, f"if (i1 >= {ilo} && i1 < {ihi} && j1 >= {jlo} && j1 < {jhi}) {{")
        for a_, b_ in taps:
            w(2, f"const long long s{a_}_{b_} = (long long)((i1 + {a_ - op.ph}) * {WIN} + j1 + {b_ - op.pw}) * "
                 f"{li.size} + {t0} + {(a_ - op.ph) * li.stride + b_ - op.pw};")
        w(2, f"for (int t = tid; t < {nsp}; t += nth) {{")
        w(3, "double kk = " + " + ".join(f"K_[s{a_}_{b_} + t]" for a_, b_ in taps) + ";")
        w(3, f"kk = {S!r} * kk + {op.b2!r};")
        w(3, f"rk[{t0} + t] = kk;")
        if want_ntk:
            if tin:
                w(3, "const double tt = " + " + ".join(f"T_[s{a_}_{b_} + t]" for a_, b_ in taps) + ";")
                w(3, f"rt[{t0} + t] = {S!r} * tt + kk;")
            else:
                w(3, f"rt[{t0} + t] = kk;")
        w(2, "}")
        w(1, "} else {")
        w(2, f"for (int t = tid; t < {nsp}; t += nth) {{")
        w(3, "double kk = 0.0, tt = 0.0;")
        w(3, f"for (int a_ = 0; a_ < {op.fh}; ++a_) {{")
        w(4, f"const int r1 = i1 + a_ - {op.ph};")
        w(4, f"if (r1 < 0 || r1 >= {HIN}) continue;")
        w(4, f"for (int b_ = 0; b_ < {op.fw}; ++b_) {{")
        w(5, f"const int c1 = j1 + b_ - {op.pw};")
        w(5, f"if (c1 < 0 || c1 >= {WIN}) continue;")
        w(5, f"const long long src = (long long)(r1 * {WIN} + c1) * {li.size} + {t0} + (a_ - {op.ph}) * {li.stride} "
             f"+ b_ - {op.pw};")
        w(5, "kk += K_[src + t];")
        if tin:
            w(5, "tt += T_[src + t];")
        w(4, "}")
        w(3, "}")
        w(3, "(void)tt;")
        w(3, f"kk = {S!r} * kk + {op.b2!r};")
        w(3, f"rk[{t0} + t] = kk;")
        if want_ntk:
            w(3, f"rt[{t0} + t] = {S!r} * tt + kk;" if tin else f"rt[{t0} + t] = kk;")
        w(2, "}")
        w(1, "}")
    elif st.producer == "pool":
        op = st.pop
        inv = 1.0 / (op.fh * op.fw) ** 2
        w(1, f"for (int t = tid; t < {HO * WO}; t += nth) {{")
        w(2, f"const int i2 = t / {WO}, j2 = t % {WO};")
        w(2, "double acc = 0.0, acct = 0.0;")
        w(2, f"for (int a1 = 0; a1 < {op.fh}; ++a1) for (int b1 = 0; b1 < {op.fw}; ++b1) {{")
        w(3, f"const long long src = (long long)((i1 * {op.fh} + a1) * {WIN} + j1 * {op.fw} + b1) * {li.size};")
        w(3, f"for (int a2 = 0; a2 < {op.fh}; ++a2) for (int b2 = 0; b2 < {op.fw}; ++b2) {{")
        w(4, f"const long long e = src + (i2 * {op.fh} + a2 + {li.pt}) * {li.stride} + {li.pl} + j2 * {op.fw} + b2;")
        w(4, "acc += K_[e];")
        if tin:
            w(4, "acct += T_[e];")
        w(3, "}")
        w(2, "}")
        w(2, "(void)acct;")
        w(2, f"rk[t] = acc * {inv!r};")
        if tin:
            w(2, f"rt[t] = acct * {inv!r};")
        w(1, "}")
    else:  # dense / ident
        t0 = lp.first
        w(1, f"const long long ob = (long long)px * {li.size} + {t0};")
        w(1, f"for (int t = tid; t < {nsp}; t += nth) {{")
        if st.producer == "dense":
            op = st.pop
            w(2, f"const double kk = {op.w2!r} * K_[ob + t] + {op.b2!r};")
            w(2, f"rk[{t0} + t] = kk;")
            if want_ntk:
                w(2, f"rt[{t0} + t] = {op.w2!r} * T_[ob + t] + kk;" if tin else f"rt[{t0} + t] = kk;")
        else:
            w(2, f"rk[{t0} + t] = K_[ob + t];")
            if tin:
                w(2, f"rt[{t0} + t] = T_[ob + t];")
        w(1, "}")
    w(1, "__syncthreads();")
    # ---- activation
    if l is not None:
        P = HO * WO
        w(1, f"for (int e = tid; e < {P}; e += nth) {{")
        w(2, f"const int i2 = e / {WO}, j = e % {WO};")
        w(2, f"const int r_ = (i2 + {lp.pt}) * {lp.stride} + {lp.pl} + j;")
        y = {"q": f"qB[b * {P} + e]", "s": f"sB[b * {P} + e]", "i": f"iB[b * {P} + e]"}
        _entry_act(w, 2, dc, want_ntk, y, "rk[r_]", "rt[r_]" if T else None,
                   f"rA[(a * {P} + px) * nl + {{}}]", f"rB[(b * {P} + e) * nl + {{}}]", "nl")
        w(1, "}")
        w(1, "__syncthreads();")
    # ---- sink
    if st.sink == "store":
        w(1, "double* Ko = Kout + p * s_out;")
        w(1, "double* To = Tout + p * s_out;")
        w(1, "(void)To;")
        w(1, f"const long long ob = (long long)px * {lo.size};")
        w(1, f"for (int z = tid; z < {lo.size}; z += nth) {{")
        w(2, f"const int r = z / {lo.stride} - {lo.pt}, c = z % {lo.stride} - {lo.pl};")
        w(2, f"const bool in = r >= 0 && r < {HO} && c >= 0 && c < {WO};")
        w(2, f"const int src = (r + {lp.pt}) * {lp.stride} + c + {lp.pl};")
        w(2, "Ko[ob + z] = in ? rk[src] : 0.0;")
        if T:
            w(2, "To[ob + z] = in ? rt[src] : 0.0;")
        w(1, "}")
    elif st.sink == "pool":
        sp_ = st.sop
        inv = 1.0 / (sp_.fh * sp_.fw) ** 2
        w(1, "double* Ko = Kout + p * s_out;")
        w(1, "double* To = Tout + p * s_out;")
        w(1, "(void)To;")
        w(1, f"const long long pb = (long long)(i1 / {sp_.fh} * {sp_.wout} + j1 / {sp_.fw}) * {lo.size};")
        w(1, f"for (int e = tid; e < {sp_.hout * sp_.wout}; e += nth) {{")
        w(2, f"const int I2 = e / {sp_.wout}, J2 = e % {sp_.wout};")
        w(2, "double acc = 0.0, acct = 0.0;")
        w(2, f"for (int a2 = 0; a2 < {sp_.fh}; ++a2) for (int b2 = 0; b2 < {sp_.fw}; ++b2) {{")
        w(3, f"const int r_ = (I2 * {sp_.fh} + a2 + {lp.pt}) * {lp.stride} + J2 * {sp_.fw} + b2 + {lp.pl};")
        w(3, "acc += rk[r_];")
        if T:
            w(3, "acct += rt[r_];")
        w(2, "}")
        w(2, "(void)acct;")
        w(2, f"const long long po = pb + (I2 + {lo.pt}) * {lo.stride} + J2 + {lo.pl};")
        w(2, f"atomicAdd(&Ko[po], acc * {inv!r});")
        if T:
            w(2, f"atomicAdd(&To[po], acct * {inv!r});")
        w(1, "}")
    elif st.sink == "flatten":
        w(1, "if (tid == 0) {")
        w(2, f"const int d_ = (i1 + {lp.pt}) * {lp.stride} + j1 + {lp.pl};")
        w(2, "atomicAdd(&kacc[p], rk[d_]);")
        if T:
            w(2, "atomicAdd(&tacc[p], rt[d_]);")
        w(1, "}")
    elif st.sink == "gap":
        w(1, "double sk = 0.0, st_ = 0.0;")
        w(1, f"for (int e = tid; e < {HO * WO}; e += nth) {{")
        w(2, f"const int r_ = (e / {WO} + {lp.pt}) * {lp.stride} + e % {WO} + {lp.pl};")
        w(2, "sk += rk[r_];")
        if T:
            w(2, "st_ += rt[r_];")
        w(1, "}")
        w(1, "atomicAdd(&kacc[p], sk);")
        if T:
            w(1, "atomicAdd(&tacc[p], st_);")
    w(0, "}")
    w(0)


def _emit_tail(w: _C, items, prog, duals, want_ntk) -> list[str]:
    """Flatten / GlobalAvgPool scaling and the layers after them: one thread per pair."""
    ops = prog.ops
    red = [it for kind, it in items if kind == "stage" and it.sink in ("flatten", "gap")][0]
    n = red.ho * red.wo if red.sink == "flatten" else (red.ho * red.wo) ** 2
    scalars = [it for kind, it in items if kind == "scalar"]
    acts = [l for l in scalars if ops[l].kind == "act"]
    params = [("kacc", "const double*"), ("tacc", "const double*"), ("ia", "const long long*"),
              ("ib", "const long long*")]
    names = []
    for l in acts:
        for nm in (f"qA{l}", f"sA{l}", f"iA{l}", f"qB{l}", f"sB{l}", f"iB{l}"):
            params.append((nm, "const double*"))
            names.append(nm)
        if duals[l].kind == "hermite":
            params += [(f"rA{l}", "const double*"), (f"rB{l}", "const double*"), (f"nl{l}", "int")]
            names += [f"rA{l}", f"rB{l}", f"nl{l}"]
    params += [("outK", "double*"), ("outT", "double*"), ("npairs", "long long")]
    w(0, "/* after Flatten / GlobalAvgPool: one thread per pair */")
    w(0, f'extern "C" __global__ void tail({_params(params)})')
    w(0, "{")
    w(1, "const long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;")
    w(1, "if (p >= npairs) return;")
    w(1, "const long long a = ia[p], b = ib[p];")
    w(1, "(void)a; (void)b;")
    w(1, f"double k = kacc[p] * {1.0 / n!r};")
    w(1, f"double t = {'tacc[p] * ' + repr(1.0 / n) if want_ntk else '0.0'};")
    for l in scalars:
        op = ops[l]
        if op.kind == "dense":
            w(1, f"k = {op.w2!r} * k + {op.b2!r};")
            if want_ntk:
                w(1, f"t = {op.w2!r} * t + k;")
        elif op.kind == "act":
            dc = duals[l]
            w(1, "{")
            w(2, f"const double q1 = qA{l}[a], s1 = sA{l}[a], i1_ = iA{l}[a];")
            w(2, "(void)s1;")
            for line in dc.hoist:
                w(2, line)
            y = {"q": f"qB{l}[b]", "s": f"sB{l}[b]", "i": f"iB{l}[b]"}
            _entry_act(w, 2, dc, want_ntk, y, "k", "t" if want_ntk else None,
                       f"rA{l}[a * nl{l} + {{}}]", f"rB{l}[b * nl{l} + {{}}]", f"nl{l}")
            w(1, "}")
    w(1, "outK[p] = k;")
    w(1, "outT[p] = t;")
    w(0, "}")
    w(0)
    return names


def _emulation_launchers(w: _C, kernels: list[tuple[str, list]]):
    w(0, "#ifdef DC_CPU_EMULATION")
    for name, params in kernels:
        args = ", ".join(n for n, _ in params)
        w(0, f'extern "C" void launch_{name}(int gx, int gy, {_params(params)})')
        w(0, "{")
        w(1, "blockDim.x = 1; blockDim.y = 1; blockDim.z = 1; threadIdx.x = 0; threadIdx.y = 0; threadIdx.z = 0;")
        w(1, "gridDim.x = gx; gridDim.y = gy; gridDim.z = 1;")
        w(1, "for (int y = 0; y < gy; ++y) for (int x = 0; x < gx; ++x) {")
        w(2, f"blockIdx.x = x; blockIdx.y = y; blockIdx.z = 0; {name}({args});")
        w(1, "}")
        w(0, "}")
    w(0, "#endif")


def generate(prog: ImageProgram, want_ntk: bool = True) -> CudaGenerated:
    """CUDA C source of the pair kernels of a layer program (sizes fixed)."""
    ops = prog.ops
    acts = prog.act_ops
    printer = CudaPrinter("double")
    duals = {l: print_dual(ops[l].act, want_ntk, f"x{l}_", printer) for l in acts}
    items = _group(prog, True, want_ntk)
    w = _C()
    w(0, "/* Exact CNNGP/CNTK, generated by dualcalc (codegen/conv_cuda.py) -- do not edit.")
    w(0, f"   input {prog.height}x{prog.width}x{prog.channels}; ntk={want_ntk}; {GENERATOR_VERSION}")
    for i, op in enumerate(ops):
        w(0, f"   op {i}: {op.kind}" + (f" {op.act.label}" if op.kind == "act" else "") +
          f": {op.hin}x{op.win} -> {op.hout}x{op.wout}")
    w(0, "*/")
    for line in PRELUDE.splitlines():
        w(0, line)
    for line in printer.helper_source().splitlines():  # Φ₂ when a dual calls it
        w(0, line)
    stages = []
    state = 1
    for k, (kind, st) in enumerate(items):
        if kind != "stage":
            continue
        name = f"stage{k}"
        _emit_stage(w, name, st, prog, duals, want_ntk)
        s_in = st.hin * st.win * st.lin.size if st.lin is not None else 0
        s_out = st.out_shape[0] * st.out_shape[1] * st.lout.size if st.lout is not None else 0
        state = max(state, s_in, s_out)
        stages.append((name, st, s_in, s_out))
    tail_names = _emit_tail(w, items, prog, duals, want_ntk)
    kernels = [(name, STAGE_PARAMS) for name, *_ in stages]
    tp = [("kacc", "const double*"), ("tacc", "const double*"), ("ia", "const long long*"),
          ("ib", "const long long*")]
    for nm in tail_names:
        tp.append((nm, "int" if nm.startswith("nl") else "const double*"))
    tp += [("outK", "double*"), ("outT", "double*"), ("npairs", "long long")]
    kernels.append(("tail", tp))
    _emulation_launchers(w, kernels)
    src = w.text()
    name = "dualcalc_conv_cuda_" + hashlib.sha256(src.encode()).hexdigest()[:20]
    g = CudaGenerated(src, name, prog, want_ntk, stages, tail_names, acts,
                      {l: duals[l].kind == "hermite" for l in acts}, state)
    g.kernels = kernels
    return g


# ---------------------------------------------------------------------------------------------
# compiling
def compile_ptx(gen: CudaGenerated, arch: str | None = None) -> str:
    """PTX of the source through NVRTC (:func:`codegen.cuda_env.compile_ptx`); needs no GPU."""
    return nvrtc_ptx(gen.source, arch or DEFAULT_ARCH, gen.name + ".cu")


_LOCK = threading.Lock()
_EMU: dict[str, object] = {}


class _Emulated:
    """The CUDA source compiled for the CPU (-DDC_CPU_EMULATION), called through ctypes."""

    def __init__(self, gen: CudaGenerated, lib: ctypes.CDLL):
        self.gen, self.lib = gen, lib
        self.funcs = {}
        for name, params in gen.kernels:
            f = getattr(lib, f"launch_{name}")
            f.restype = None
            f.argtypes = [ctypes.c_int, ctypes.c_int] + [
                ctypes.c_void_p if t.endswith("*") else (ctypes.c_longlong if "long" in t else ctypes.c_int)
                for _, t in params]
            self.funcs[name] = (f, params)

    xp = np

    def launch(self, name, grid, block, args):
        f, params = self.funcs[name]
        conv = []
        for (pn, t), v in zip(params, args):
            if t.endswith("*"):
                conv.append(None if v is None else v.ctypes.data)
            else:
                conv.append(int(v))
        gx = int(grid[0]) * (int(block) if name == "tail" else 1)  # one thread per block here
        f(gx, int(grid[1]) if len(grid) > 1 else 1, *conv)


def emulator(gen: CudaGenerated):
    """The generated CUDA source compiled by the host C++ compiler with -DDC_CPU_EMULATION."""
    with _LOCK:
        if gen.name in _EMU:
            return _EMU[gen.name]
        lib = compile_for_cpu(gen.source, gen.name, defines=("DC_CPU_EMULATION",))
        emu = _Emulated(gen, lib)
        _EMU[gen.name] = emu
        return emu


class _Device:
    """The generated source compiled by CuPy (NVRTC) for the visible GPU."""

    def __init__(self, gen: CudaGenerated):
        import cupy

        self.xp = cupy
        self.module = cupy.RawModule(code=gen.source, options=(CXX_STD,), name_expressions=None)
        self.funcs = {name: (self.module.get_function(name), params) for name, params in gen.kernels}

    def launch(self, name, grid, block, args):
        f, params = self.funcs[name]
        conv = []
        for (pn, t), v in zip(params, args):
            if t.endswith("*"):
                conv.append(v if v is not None else self.xp.zeros(1))
            elif "long" in t:
                conv.append(np.int64(v))
            else:
                conv.append(np.int32(v))
        f(tuple(int(g) for g in grid), (int(block),), tuple(conv))


# ---------------------------------------------------------------------------------------------
# running
def run_pairs(gen: CudaGenerated, dev, A, B, tabA, tabB, ia, ib, batch: int = 64):
    """(K, Θ) of the image pairs (A[ia], B[ib]) on ``dev`` (a GPU, or the CPU emulator)."""
    xp = dev.xp
    P0, C = gen.prog.pixels, gen.prog.channels
    A2 = xp.asarray(np.ascontiguousarray(A.reshape(A.shape[0], P0, C)))
    BT = xp.asarray(np.ascontiguousarray(B.reshape(B.shape[0], P0, C).transpose(0, 2, 1)))
    dtab = {}
    for l in gen.acts:
        qa, sa, iaa, ra = tabA[l]
        qb, sb, ibb, rb = tabB[l]
        ent = [xp.asarray(np.ascontiguousarray(v, dtype=np.float64)) for v in (qa, sa, iaa, qb, sb, ibb)]
        nl = 0
        if gen.hermite[l]:
            L = max(ra.shape[-1], rb.shape[-1])
            pad = lambda R: np.concatenate([R, np.zeros(R.shape[:-1] + (L - R.shape[-1],))], axis=-1)
            ent += [xp.asarray(np.ascontiguousarray(pad(ra))), xp.asarray(np.ascontiguousarray(pad(rb)))]
            nl = L
        else:
            ent += [None, None]
        dtab[l] = (ent, nl)
    npairs = len(ia)
    outK, outT = np.empty(npairs), np.empty(npairs)
    S = gen.state
    bufs = [xp.zeros(batch * S) for _ in range(4)]  # K0, K1, T0, T1
    kacc, tacc = xp.zeros(batch), xp.zeros(batch)
    for s0 in range(0, npairs, batch):
        nb = min(batch, npairs - s0)
        pa = xp.asarray(np.ascontiguousarray(ia[s0:s0 + nb], dtype=np.int64))
        pb = xp.asarray(np.ascontiguousarray(ib[s0:s0 + nb], dtype=np.int64))
        kacc[:] = 0
        tacc[:] = 0
        cur = 0
        for name, st, s_in, s_out in gen.stages:
            nxt = 1 - cur
            Kin, Tin = bufs[cur], bufs[2 + cur]
            Kout, Tout = bufs[nxt], bufs[2 + nxt]
            if st.sink == "pool":
                Kout[: nb * s_out] = 0
                Tout[: nb * s_out] = 0
            tabs = dtab[st.act_index] if st.act_index is not None else ([None] * 8, 0)
            ent, nl = tabs
            h_lim, w_lim = st.ho, st.wo
            if st.sink == "pool":
                h_lim, w_lim = st.sop.hout * st.sop.fh, st.sop.wout * st.sop.fw
            args = [Kin, Tin, Kout, Tout, A2, BT, pa, pb, *ent, nl, kacc, tacc, s_in, s_out]
            dev.launch(name, (h_lim * w_lim, nb), THREADS, args)
            if st.sink in ("store", "pool"):
                cur = nxt
        targs = [kacc, tacc, pa, pb]
        for nm in gen.tail_args:
            l = int(nm.lstrip("qsiArBnl"))
            ent, nl = dtab[l]
            key = nm[:2]
            idx = {"qA": 0, "sA": 1, "iA": 2, "qB": 3, "sB": 4, "iB": 5, "rA": 6, "rB": 7}.get(key)
            targs.append(nl if nm.startswith("nl") else ent[idx])
        oK, oT = xp.zeros(nb), xp.zeros(nb)
        targs += [oK, oT, nb]
        dev.launch("tail", ((nb + THREADS - 1) // THREADS,), THREADS, targs)
        outK[s0:s0 + nb] = oK.get() if xp is not np else oK
        outT[s0:s0 + nb] = oT.get() if xp is not np else oT
    return outK, outT


def cuda_conv_kernel(prog: ImageProgram, X, Y=None, get=("nngp", "ntk"), *, emulate: bool = False,
                     batch: int = 64, threads: int | None = None):
    """Exact kernel through the generated CUDA source: on the GPU, or (``emulate=True``) the same
    source compiled for the CPU.  The images' own recursions run on the CPU (Numba)."""
    from . import conv_numba as cn

    want_ntk = "ntk" in get
    gen = generate(prog, want_ntk)
    if emulate:
        dev = emulator(gen)
    else:
        require_gpu("backend='cuda'")
        with _LOCK:
            dev = _EMU.get("dev:" + gen.name) or _Device(gen)
            _EMU["dev:" + gen.name] = dev
    ngen = cn.generate(prog, want_ntk)
    nmod = cn.load(ngen)
    n1 = X.shape[0]
    Kx, Tx, tabX = cn._self(prog, ngen, nmod, X, want_ntk, 8, threads)
    if Y is None:
        iu, ju = np.triu_indices(n1, k=1)
        K = np.empty((n1, n1))
        T = np.empty((n1, n1))
        K[np.arange(n1), np.arange(n1)] = Kx
        T[np.arange(n1), np.arange(n1)] = Tx
        if len(iu):
            k, t = run_pairs(gen, dev, X, X, tabX, tabX, iu, ju, batch)
            K[iu, ju] = K[ju, iu] = k
            T[iu, ju] = T[ju, iu] = t
    else:
        _, _, tabY = cn._self(prog, ngen, nmod, Y, False, 8, threads)
        n2 = Y.shape[0]
        ia = np.repeat(np.arange(n1), n2)
        ib = np.tile(np.arange(n2), n1)
        k, t = run_pairs(gen, dev, X, Y, tabX, tabY, ia, ib, batch)
        K, T = k.reshape(n1, n2), t.reshape(n1, n2)
    return (K if "nngp" in get else None), (T if want_ntk else None)
