r"""The CUDA target: the same recursion as ``extern "C" __global__`` CUDA C for CuPy.

The generated source (``net.source("cuda")``) holds, for each precision (``double`` and
``float``, suffixes ``_f64``/``_f32``):

* the ``__device__`` bivariate normal CDF ``dc_phi2_<prec>`` (:func:`codegen.mathlib.cuda_phi2`)
  when a dual holds ``Phi2``;
* one ``__device__`` function per activation's dual, printed by
  :class:`codegen.printers.CudaPrinter` (common subexpressions of k and k̇ shared,
  ``sqrtf``/``asinf``… and ``f`` literals in the float variant);
* ``fc_kernel_<prec>``: one thread per output entry (i, j) of a panel of rows; it reads the
  Gram value ⟨x_i, y_j⟩ that cuBLAS (``cupy.matmul``) wrote into the output, runs all
  layers in registers from the per-point variances, evaluates Hermite-method duals by
  Horner's rule from the per-point coefficient tables, and writes K and Θ.  For K(X, X)
  (one panel) threads below the diagonal exit and those above also write the mirror entry.

:func:`compile_ptx` (:mod:`codegen.cuda_env`, re-exported here) compiles the source to PTX
with NVRTC (no GPU needed: the CPU test suite checks that every generated source compiles);
:func:`run` needs a GPU and CuPy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dualcalc.dual import HERMITE
from dualcalc.errors import InputError
from dualcalc.program import Affine, Normalize, Pointwise, Prod, Program, Sum

from . import cache, mathlib
from .cuda_env import (CPU_PRELUDE, CXX_STD, DEFAULT_ARCH, compile_for_cpu, compile_ptx,  # noqa: F401
                       gpu_available, gpu_unavailable_reason, nvrtc_available, require_gpu)
from .printers import CudaPrinter, dual_body

GENERATOR_VERSION = "cuda-2"  # 2: reads the network program (registers, branches)
BLOCK = (32, 8)  # threads per block: 32 columns (coalesced) × 8 rows


@dataclass(frozen=True)
class GeneratedCuda:
    source: str
    digest: str
    want_k: bool
    want_t: bool
    kernels: tuple[str, str]  # (double, float) entry points


# ------------------------------------------------------------------------------------------------
# generation
def _dual_device(op: Pointwise, printer: CudaPrinter, suffix: str) -> list[str]:
    T = printer.ctype
    body = dual_body(op.k, op.kdot, printer)
    lines = [
        f"// {op.label}: closed form ({op.rule}); (u, v) ~ N(0, [[q1, c], [c, q2]]), s = sqrt(q),",
        "// rho = c/(s1 s2) clipped to [-1, 1]; k = E[σ(u)σ(v)], kdot = E[σ'(u)σ'(v)]",
        f"__device__ __forceinline__ void {op.name}_{suffix}({T} q1, {T} q2, {T} s1, {T} s2, {T} c, {T} rho,",
        f"        {T}* k, {T}* kdot)",
        "{",
    ]
    for name, text in body.temps:
        lines.append(f"    const {T} {name} = {text};")
    lines.append(f"    *k = {body.k};")
    lines.append(f"    *kdot = {body.kdot};")
    lines.append("}")
    return lines


def _params(spec: Program, T: str) -> list[str]:
    """The kernel's parameters ("type name") for element type ``T``."""
    args = [f"{T}* __restrict__ K", f"{T}* __restrict__ Tm", "const long long r0", "const long long m",
            "const long long n1", "const long long n2", "const int sym", f"const {T} inv_d", f"const {T} d_in",
            f"const {T}* __restrict__ Q1", f"const {T}* __restrict__ Q2", f"const {T}* __restrict__ S1",
            f"const {T}* __restrict__ S2", f"const {T}* __restrict__ R1", f"const {T}* __restrict__ R2"]
    for op in spec.act_ops():
        if op.method == HERMITE:
            h = op.hermite_slot
            args += [f"const {T}* __restrict__ HX{h}", f"const {T}* __restrict__ HY{h}", f"const int deg{h}"]
    return args


def _kernel(spec: Program, printer: CudaPrinter, suffix: str, want_k: bool, want_t: bool) -> list[str]:
    T = printer.ctype
    lit = printer._lit
    args = _params(spec, T)
    name = f"fc_kernel_{suffix}"
    L = [f'extern "C" __global__ void {name}(']
    L += ["    " + a + ("," if k < len(args) - 1 else ")") for k, a in enumerate(args)]
    L += [
        "{",
        "    // one thread per entry (i, j), i in rows [r0, r0 + m) of the output; K and Tm hold the",
        "    // panel's m rows, K (or Tm) the Gram value <x_i, y_j> on entry.  sym (one panel only):",
        "    // K(X, X), threads with j <= i exit, the others also write the mirror entry.",
        "    // Q1[a*n1 + i], S1, R1: variance, its root and inverse root (0 at q = 0) of point i at",
        "    // slot a (an activation, or a LayerNorm with q + eps; Q2, S2, R2 for the y points, stride",
        "    // n2); HXh[i*(deg+1) + l] and HYh[l*n2 + j]: Hermite tables r_l(q) of Hermite layer h.",
        "    // Register r of the network's program is (c<r>, t<r>): K and Θ of the pair.",
        "    const long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;",
        "    const long long il = (long long)blockIdx.y * blockDim.y + threadIdx.y;",
        "    if (il >= m || j >= n2) return;",
        "    const long long i = r0 + il;",
        "    if (sym && j <= i) return;  // lower triangle: mirrored; diagonal: from the plan",
        "    const long long ij = il * n2 + j;",
        f"    const {T} c0 = {'K' if want_k else 'Tm'}[ij] * inv_d;  // input kernel <x, y>/d",
        f"    {T} k, kdot, rho;",
    ]
    tzero = [False] * len(spec.ops)  # Θ statically 0 (the input, after a delta σ'): not emitted
    tzero[0] = True
    one, zero = lit(1.0), lit(0.0)

    def set_t(r: int, text: str | None, why: str = "") -> None:
        if text is None:
            tzero[r] = True
            if why and want_t:
                L.append(f"    // {why}")
        elif want_t:
            L.append(f"    const {T} t{r} = {text};")

    for r, op in enumerate(spec.ops):
        if r == 0:
            continue
        if isinstance(op, Affine):
            x = op.src
            L.append(f"    // {op.label}")
            w2, b2 = lit(op.w2), lit(op.b2)
            L.append(f"    const {T} c{r} = {w2} * c{x} + {b2};")
            if op.standard:
                width = "d_in" if op.width is None else lit(float(op.width))
                terms = [f"{width} * c{x}"] + ([] if tzero[x] else [f"{w2} * t{x}"]) + ([one] if op.bias else [])
                set_t(r, " + ".join(terms))  # standard parameterization
            else:
                set_t(r, f"c{r}" if tzero[x] else f"{w2} * t{x} + c{r}")
            continue
        if isinstance(op, Normalize):
            a, x = op.slot, op.src
            L.append(f"    // {op.label}: K, Θ / sqrt((q_x + eps)(q_y + eps))")
            L.append(f"    const {T} nrm{r} = R1[{a}*n1 + i] * R2[{a}*n2 + j];")
            L.append(f"    const {T} c{r} = c{x} * nrm{r};")
            set_t(r, None if tzero[x] else f"t{x} * nrm{r}")
            continue
        if isinstance(op, Sum):
            L.append(f"    // {op.label}: K, Θ summed over the branches")
            L.append(f"    const {T} c{r} = " + op.terms([f"c{s}" for s in op.srcs], lit) + ";")
            set_t(r, op.terms([None if tzero[s] else f"t{s}" for s in op.srcs], lit))
            continue
        if isinstance(op, Prod):
            L.append(f"    // {op.label}: K = prod K_i, Θ = sum_i Θ_i prod_(j != i) K_j")
            kk, tt = op.terms([f"c{s}" for s in op.srcs], [None if tzero[s] else f"t{s}" for s in op.srcs])
            L.append(f"    const {T} c{r} = {kk};")
            set_t(r, tt)
            continue
        a, x = op.slot, op.src
        L.append(f"    // {op.label}: {'Hermite series' if op.method == HERMITE else 'closed form'} ({op.rule})")
        L.append(f"    rho = {printer._fn('fmin')}({printer._fn('fmax')}(c{x} * R1[{a}*n1 + i] * R2[{a}*n2 + j], -{one}), {one});")
        if op.method == HERMITE:
            h = op.hermite_slot
            L += [
                "    {",
                f"        {T} ak = {zero}, at = {zero};",
                f"        for (int l = deg{h}; l >= 1; --l) {{",
                f"            const {T} p = HX{h}[i*(deg{h} + 1) + l] * HY{h}[(long long)l*n2 + j];",
                "            ak = ak * rho + p;",
                "            at = at * rho + l * p;",
                "        }",
                f"        k = ak * rho + HX{h}[i*(deg{h} + 1)] * HY{h}[j];",
                f"        kdot = at * R1[{a}*n1 + i] * R2[{a}*n2 + j];",
                "    }",
            ]
        else:
            L.append(f"    {op.name}_{suffix}(Q1[{a}*n1 + i], Q2[{a}*n2 + j], S1[{a}*n1 + i], S2[{a}*n2 + j], c{x}, rho, "
                     "&k, &kdot);")
        if op.zero_ntk:
            set_t(r, None, "σ' is a delta: no NTK passes")
        else:
            set_t(r, None if tzero[x] else f"t{x} * kdot")
        L.append(f"    const {T} c{r} = k;")
    o = spec.output
    t_out = zero if tzero[o] else f"t{o}"
    if want_k:
        L.append(f"    K[ij] = c{o};")
        L.append(f"    if (sym) K[j * n2 + i] = c{o};")
    if want_t:
        L.append(f"    Tm[ij] = {t_out};")
        L.append(f"    if (sym) Tm[j * n2 + i] = {t_out};")
    L.append("}")
    return L


_GENERATED: dict = {}


def generate(spec: Program, get=("nngp", "ntk")) -> GeneratedCuda:
    """CUDA C of ``spec``: double and float variants of the duals and of the kernel (memoised)."""
    key = (spec.key, "nngp" in get, "ntk" in get)
    gen = _GENERATED.get(key)
    if gen is None:
        gen = _GENERATED[key] = _generate(spec, get)
    return gen


def _generate(spec: Program, get) -> GeneratedCuda:
    want_k, want_t = "nngp" in get, "ntk" in get
    L = cache.banner("//", "dualcalc generated kernel (CUDA C for CuPy RawModule).  Generated text: regenerate it.",
                     spec.description, get, GENERATOR_VERSION,
                     extra=("variants  : fc_kernel_f64 (double) and fc_kernel_f32 (float)",))
    for precision, suffix in (("double", "f64"), ("float", "f32")):
        printer = CudaPrinter(precision)
        L += ["", f"// ===== {precision} =====", ""]
        done: set[str] = set()
        duals: list[str] = []
        for op in spec.act_ops():
            if op.method != HERMITE and op.name not in done:
                done.add(op.name)
                duals += _dual_device(op, printer, suffix)
                duals.append("")
        if "phi2" in printer.helpers_used:  # the duals call Φ₂: its device function, once per precision
            L += mathlib.cuda_phi2(precision).split("\n")
        L += duals
        L += _kernel(spec, printer, suffix, want_k, want_t)
    text = "\n".join(L) + "\n"
    digest = cache.content_hash(GENERATOR_VERSION, text)
    return GeneratedCuda(text, digest, want_k, want_t, ("fc_kernel_f64", "fc_kernel_f32"))


# ------------------------------------------------------------------------------------------------
# compilation (NVRTC through codegen.cuda_env)
def cached_ptx(gen: GeneratedCuda, arch: str = DEFAULT_ARCH) -> str:
    """PTX of a generated source, cached by content hash in the cache folder."""
    path = cache.cache_dir() / "cuda" / f"dc_cuda_{gen.digest}_{arch}.ptx"
    try:
        return path.read_text()
    except FileNotFoundError:
        pass
    cache.write_once(cache.cache_dir() / "cuda" / f"dc_cuda_{gen.digest}.cu", gen.source)
    ptx = compile_ptx(gen.source, arch)
    cache.write_once(path, ptx)
    return ptx


_MODULES: dict = {}


def _module(gen: GeneratedCuda):
    import cupy

    key = (gen.digest, cupy.cuda.Device().id)
    mod = _MODULES.get(key)
    if mod is None:
        cache.write_once(cache.cache_dir() / "cuda" / f"dc_cuda_{gen.digest}.cu", gen.source)
        mod = cupy.RawModule(code=gen.source, options=(CXX_STD,))
        _MODULES[key] = mod
    return mod


# ------------------------------------------------------------------------------------------------
# running
class _Emulated:
    """The generated source compiled for the CPU (:func:`codegen.cuda_env.compile_for_cpu`), its two
    kernels called through ctypes with the launch loops of a grid: what the tests run without a GPU."""

    def __init__(self, spec: Program, gen: GeneratedCuda):
        drivers = []
        self.argtypes = {}
        for name, T in zip(gen.kernels, ("double", "float"), strict=True):
            params = _params(spec, T)
            names = ", ".join(p.split()[-1] for p in params)
            drivers += [f'extern "C" void launch_{name}(unsigned gx, unsigned gy, unsigned bx, unsigned by, '
                        + ", ".join(params) + ") {",
                        "    blockDim.x = bx; blockDim.y = by; blockDim.z = 1; gridDim.x = gx; gridDim.y = gy;",
                        "    for (unsigned y = 0; y < gy; ++y) for (unsigned x = 0; x < gx; ++x)",
                        "        for (unsigned ty = 0; ty < by; ++ty) for (unsigned tx = 0; tx < bx; ++tx) {",
                        "            blockIdx.x = x; blockIdx.y = y; threadIdx.x = tx; threadIdx.y = ty;",
                        f"            {name}({names});",
                        "        }",
                        "}"]
            self.argtypes[name] = [_ctype(p) for p in params]
        self.lib = compile_for_cpu(CPU_PRELUDE + gen.source + "\n".join(drivers) + "\n", f"dc_cuda_{gen.digest}")

    def get_function(self, name: str):
        import ctypes

        f = getattr(self.lib, f"launch_{name}")
        f.restype = None
        f.argtypes = [ctypes.c_uint] * 4 + self.argtypes[name]

        def launch(grid, block, args):
            vals = [a.ctypes.data if isinstance(a, np.ndarray) else a.item() if isinstance(a, np.generic) else a
                    for a in args]
            f(*grid, *block, *vals)
        return launch


def _ctype(param: str):
    import ctypes

    if "*" in param:
        return ctypes.c_void_p
    kind = param.split()[-2]
    return {"long": ctypes.c_longlong, "int": ctypes.c_int, "double": ctypes.c_double,
            "float": ctypes.c_float}[kind]


def run(spec: Program, plan, X: np.ndarray, Y: np.ndarray | None, get, dtype, *, block_size=None,
        progress=None, precision=None, return_device=False, emulate=False):
    """Exact kernels on the GPU; returns (K, T) as NumPy arrays (CuPy with return_device=True).
    ``emulate=True``: the same source compiled for the CPU, NumPy arrays (tests without a GPU)."""
    if emulate:
        cupy = _NumpyAsCupy
    else:
        require_gpu("backend='cuda'")
        import cupy

    gen = generate(spec, get)
    dtype = np.dtype(dtype)
    if precision is None:
        precision = "float" if dtype == np.float32 else "double"
    if precision not in ("double", "float"):
        raise InputError(f"precision must be 'double' or 'float', got {precision!r}")
    ct = np.float64 if precision == "double" else np.float32
    mod = _emulated(spec, gen) if emulate else _module(gen)
    fn = mod.get_function(gen.kernels[0] if precision == "double" else gen.kernels[1])
    sym = Y is None
    n1, d = X.shape
    n2 = n1 if sym else Y.shape[0]
    Xd = cupy.asarray(X, dtype=ct)
    Yd = Xd if sym else cupy.asarray(Y, dtype=ct)

    steps = plan.steps
    if steps:
        Q1h = np.stack([s.qx for s in steps])
        Q2h = Q1h if sym else np.stack([s.qy for s in steps])
    else:
        Q1h, Q2h = np.zeros((1, n1)), np.zeros((1, n2))
    S1h, S2h = np.sqrt(Q1h), np.sqrt(Q2h)
    R1h, R2h = plan.inverse_roots()  # 1/√q (a zero variance at a Hermite layer: see there)
    dev = [cupy.asarray(np.ascontiguousarray(a), dtype=ct) for a in (Q1h, Q2h, S1h, S2h, R1h, R2h)]
    tables = []
    for s in steps:
        if s.hermite:
            tables += [cupy.asarray(np.ascontiguousarray(s.Rx), dtype=ct),
                       cupy.asarray(np.ascontiguousarray(s.Ry.T), dtype=ct), np.int32(s.Rx.shape[1] - 1)]
    item = np.dtype(ct).itemsize
    n_out = int(gen.want_k) + int(gen.want_t)
    free = (1 << 40) if emulate else cupy.cuda.runtime.memGetInfo()[0]
    whole = n1 * n2 * item * n_out < 0.6 * free
    if block_size is None:
        bs = n1 if whole else max(1, int(0.4 * free / (n2 * item * n_out)))
    else:
        bs = max(1, int(block_size))
    one_panel = bs >= n1
    use_sym = sym and one_panel
    rows = n1 if one_panel else bs
    Kd = cupy.empty((rows, n2), dtype=ct) if gen.want_k else cupy.empty((1, 1), dtype=ct)
    Td = cupy.empty((rows, n2), dtype=ct) if gen.want_t else cupy.empty((1, 1), dtype=ct)
    G = Kd if gen.want_k else Td
    K = T = None
    if not return_device or not one_panel:
        K = np.empty((n1, n2), dtype) if gen.want_k else None
        T = np.empty((n1, n2), dtype) if gen.want_t else None
    for r0 in range(0, n1, rows):
        r1 = min(n1, r0 + rows)
        m = r1 - r0
        cupy.matmul(Xd[r0:r1], Yd.T, out=G[:m])
        grid = ((n2 + BLOCK[0] - 1) // BLOCK[0], (m + BLOCK[1] - 1) // BLOCK[1])
        # the kernel indexes rows from r0 into a buffer that starts at row r0: pass views shifted by -r0
        fn(grid, BLOCK, (Kd, Td, np.int64(r0), np.int64(m), np.int64(n1), np.int64(n2), np.int32(use_sym),
                         ct(1.0 / d), ct(d), *dev, *tables))
        if sym:
            idx = cupy.arange(m)
            if gen.want_k:
                Kd[idx, r0 + idx] = cupy.asarray(plan.qx_out[r0:r1], dtype=ct)
            if gen.want_t:
                Td[idx, r0 + idx] = cupy.asarray(plan.tx_out[r0:r1], dtype=ct)
        if return_device and one_panel:
            K = Kd.astype(dtype, copy=False) if gen.want_k else None
            T = Td.astype(dtype, copy=False) if gen.want_t else None
        else:
            if gen.want_k:
                K[r0:r1] = cupy.asnumpy(Kd[:m]).astype(dtype, copy=False)
            if gen.want_t:
                T[r0:r1] = cupy.asnumpy(Td[:m]).astype(dtype, copy=False)
    if not emulate:
        cupy.cuda.Device().synchronize()
    return K, T


class _NumpyAsCupy:
    """The few CuPy calls :func:`run` makes, on the host (emulation)."""

    asarray, empty, matmul, arange = np.asarray, np.empty, np.matmul, np.arange

    @staticmethod
    def asnumpy(a):
        return np.asarray(a)


_EMULATED: dict = {}


def _emulated(spec: Program, gen: GeneratedCuda) -> _Emulated:
    emu = _EMULATED.get(gen.digest)
    if emu is None:
        emu = _EMULATED[gen.digest] = _Emulated(spec, gen)
    return emu
