r"""Duals printed as JAX code, and neural-tangents ``stax`` layers built from them.

An activation becomes three functions of the convention of ``stax.Elementwise``:

* ``fn(x)`` — σ itself (for the finite-width ``apply_fn``);
* ``nngp_fn(cov12, var1, var2)`` = k(q1, q2, c) = E[σ(u)σ(v)];
* ``d_nngp_fn(cov12, var1, var2)`` = k̇ = E[σ'(u)σ'(v)] (σ' the almost-everywhere derivative,
  the NTK factor neural-tangents multiplies by),

with (u, v) ~ N(0, [[var1, cov12], [cov12, var2]]) and ρ = clip(c/√(q1 q2), −1, 1).

Closed forms are printed by SymPy's ``JaxPrinter`` after common subexpression elimination,
with the safe forms of dualcalc's own printers (see :class:`_Printer`: float64 literals, guarded
square roots, acos/asin arguments clipped, Piecewise/Heaviside/Max/Min as ``jnp.where``).  ρ
within 8 ulp of ±1 is taken as ±1, as dualcalc's kernels take ρ = 1 on the diagonal of K(X, X)
(neural-tangents' diagonal covariance and variance differ by an ulp, which would otherwise cost
~1e−8 through arccos).  Float64 needs ``jax.config.update("jax_enable_x64", True)`` (a warning
says so otherwise).  Hermite-method duals are exported as their series
k = Σ_l r_l(q1) r_l(q2) ρ^l, k̇ = Σ_l l r_l(q1) r_l(q2) ρ^{l−1}/√(q1 q2) (or Σ r'_l r'_l ρ^l with
the coefficients of σ' when σ jumps), with r_l(q) from a fixed table: dualcalc's own
coefficients at Chebyshev points (2nd kind) in s = √q over ``q_range`` (the activation's,
default (0.01, 50)), evaluated by barycentric interpolation.  The number of points doubles
from 32 until interpolated and directly computed tables agree to 1e-13 (relative to
√E[σ_q²]) at every midpoint; the degree is the series' own for that range, so the accuracy
is the series' error estimate over that range plus the interpolation error
(:attr:`HermiteTable.error`, printed in the generated header).  Outside ``q_range`` the
functions return NaN (a fixed table cannot know coefficients it was not built for): pass a
wider ``q_range`` to ``to_stax``.

The generated text is a self-contained Python module (``net.source("jax")``); ``to_stax``
executes exactly that text.  It is produced from SymPy trees and numbers, never from user
text.  JAX and neural-tangents are imported only here, when a function is called.
"""
from __future__ import annotations

import base64
import textwrap
from dataclasses import dataclass

import numpy as np
import sympy as sp
from sympy.printing.codeprinter import PrintMethodNotImplementedError
from sympy.printing.numpy import JaxPrinter

from .dual import CLOSED_FORM, Dual
from .hermite import barycentric
from .errors import BackendError, ParameterError
from .symbols import rho
from .warn import warn

_HINT = ("install the 'jax' extra: pip install 'dualcalc[jax]' (neural-tangents==0.6.5, jax==0.5.3, "
         "jaxlib==0.5.3, tf2jax==0.3.7)")

#: Interpolation accuracy asked of the Hermite tables (relative to √E[σ_q²]).
TABLE_RTOL = 1e-13


class _Printer(JaxPrinter):
    """SymPy's JaxPrinter (float64 literals) with the safe forms of dualcalc's own printers:

    * square roots of expressions not known to be ≥ 0 as ``sqrt(maximum(e, 0))`` (round-off
      can make q1 q2 − c² = −1e−17 on the diagonal);
    * ``arccos``/``arcsin`` of anything but the (already clipped) ρ clipped to [−1, 1];
    * Piecewise, Heaviside, Max and Min as ``jax.numpy.where`` (so ``jax.grad`` gives the
      almost-everywhere derivative, 0 on the flat side of a kink);
    * numbers as float64 literals (``repr``: the nearest double), integer powers exact.
    """

    def __init__(self):
        super().__init__({"fully_qualified_modules": True, "allow_unknown_functions": False})

    def _j(self, name: str) -> str:
        return self._module_format(f"jax.numpy.{name}")

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Rational(self, expr):
        return repr(float(expr))

    def _print_Half(self, expr):
        return "0.5"

    def _print_Pow(self, expr, rational=False):
        b, e = expr.base, expr.exp
        base = self._print(b)
        if e.is_Rational and e.q == 2:
            if not b.is_nonnegative:
                base = f"{self._j('maximum')}({base}, 0.0)"
            root = f"{self._j('sqrt')}({base})"
            return root if e.p == 1 else f"({root}**{int(e.p)})"
        if e.is_Integer:  # Python int exponent: jax's exact integer_pow, fine for negative bases
            return f"(({base})**{int(e)})"
        return f"{self._j('power')}({base}, {self._print(e)})"

    def _print_erf(self, expr):
        return f"{self._module_format('jax.scipy.special.erf')}({self._print(expr.args[0])})"

    def _print_erfc(self, expr):
        return f"{self._module_format('jax.scipy.special.erfc')}({self._print(expr.args[0])})"

    def _clip1(self, arg) -> str:
        text = self._print(arg)
        return text if arg == rho else f"{self._j('clip')}({text}, -1.0, 1.0)"

    def _print_acos(self, expr):
        return f"{self._j('arccos')}({self._clip1(expr.args[0])})"

    def _print_asin(self, expr):
        return f"{self._j('arcsin')}({self._clip1(expr.args[0])})"

    def _print_Abs(self, expr):
        return f"{self._j('abs')}({self._print(expr.args[0])})"

    def _print_Piecewise(self, expr):
        out = self._j("nan")  # no branch true (SymPy's own convention)
        for value, cond in reversed(expr.args):
            if cond == sp.true:
                out = self._print(value)
            else:
                out = f"{self._j('where')}({self._print(cond)}, {self._print(value)}, {out})"
        return out

    def _print_Heaviside(self, expr):
        a = self._print(expr.args[0])
        h0 = self._print(expr.args[1]) if len(expr.args) > 1 else "0.5"
        w = self._j("where")
        return f"{w}(({a}) > 0, 1.0, {w}(({a}) == 0, {h0}, 0.0))"

    def _minmax(self, expr, op: str) -> str:
        out = self._print(expr.args[0])
        for a in expr.args[1:]:
            b = self._print(a)
            out = f"{self._j('where')}(({out}) {op} ({b}), {out}, {b})"
        return out

    def _print_Max(self, expr):
        return self._minmax(expr, ">=")

    def _print_Min(self, expr):
        return self._minmax(expr, "<=")


def jax_code(expr: sp.Expr) -> tuple[list[tuple[str, str]], str]:
    """(assignments, result) for ``expr`` after common subexpression elimination.

    Raises :class:`~dualcalc.errors.BackendError` for a function JAX has no counterpart for.
    """
    printer = _Printer()
    subs, (reduced,) = sp.cse(sp.sympify(expr), symbols=sp.numbered_symbols("t_"))
    try:
        lines = [(str(s), printer.doprint(e)) for s, e in subs]
        out = printer.doprint(reduced)
    except PrintMethodNotImplementedError as err:
        raise BackendError(f"no JAX counterpart for a function in {expr}: {str(err).splitlines()[0]}") from None
    return lines, out


def _body(lines: list[tuple[str, str]], result: str, indent: str = "    ") -> str:
    return "".join(f"{indent}{a} = {b}\n" for a, b in lines) + f"{indent}return {result}\n"


def require_jax():
    """Import jax (with a clear error and install hint when it is missing)."""
    try:
        import jax
        import jax.numpy  # noqa: F401 - the generated code uses it fully qualified
        import jax.scipy.special  # noqa: F401
    except Exception as err:  # noqa: BLE001 - any import failure means "not available"
        raise BackendError(f"JAX is not importable ({type(err).__name__}: {err}); {_HINT}") from None
    return jax


def require_stax():
    """Import neural-tangents' ``stax`` (clear error and install hint when missing); warn once
    when JAX computes in float32 (its default)."""
    jax = require_jax()
    if not jax.config.jax_enable_x64:
        warn("JAX runs in float32 (jax_enable_x64 is off): the neural-tangents kernels of these layers will "
             "agree with dualcalc's float64 kernels only to ~1e-6 relative; for float64 call "
             "jax.config.update('jax_enable_x64', True) before creating any JAX array",
             RuntimeWarning, key="jax-float32")
    try:
        from neural_tangents import stax
    except Exception as err:  # noqa: BLE001
        raise BackendError(f"neural-tangents is not importable ({type(err).__name__}: {err}); {_HINT}") from None
    return stax


# -- Hermite tables ------------------------------------------------------------------------------
@dataclass
class HermiteTable:
    """r_l(q) at Chebyshev points s_j (2nd kind) in s = √q: ``R`` (m+1, degree+1), ``Rd`` the same
    for σ' (σ jumps) or None, barycentric weights ``w``, and the interpolation error reached."""

    s: np.ndarray
    w: np.ndarray
    R: np.ndarray
    Rd: np.ndarray | None
    q_range: tuple[float, float]
    interp_error: float
    err_nngp: float = 0.0
    err_ntk: float = 0.0

    @property
    def error(self) -> float:
        """Relative accuracy of the exported dual over ``q_range``: series truncation (the
        estimate of :class:`~dualcalc.dual.HermiteSeries`) plus interpolation."""
        return max(self.err_nngp, self.err_ntk) + self.interp_error


def _cheb(lo: float, hi: float, m: int) -> tuple[np.ndarray, np.ndarray]:
    k = np.arange(m + 1)
    s = 0.5 * (lo + hi) - 0.5 * (hi - lo) * np.cos(np.pi * k / m)
    s[0], s[-1] = lo, hi
    w = (-1.0) ** k
    w[0] *= 0.5
    w[-1] *= 0.5
    return s, w


def hermite_table(dual: Dual, q_range: tuple[float, float]) -> HermiteTable:
    """The coefficient table of a Hermite dual over ``q_range`` (see the module docstring)."""
    series = dual.series
    lo, hi = float(np.sqrt(q_range[0])), float(np.sqrt(q_range[1]))
    m, err = 32, np.inf
    while True:
        s, w = _cheb(lo, hi, m)
        t = series.tables(s**2)
        mid = 0.5 * (lo + hi) - 0.5 * (hi - lo) * np.cos(np.pi * (np.arange(m) + 0.5) / m)
        tm = series.tables(mid**2, degree=t.degree)
        err = 0.0
        for A, Am in ((t.R, tm.R), (t.Rd, tm.Rd)):
            if A is None:
                continue
            scale = np.sqrt(np.maximum(np.sum(Am**2, axis=1), 1e-300))[:, None]
            err = max(err, float(np.max(np.abs(barycentric(s, A, mid) - Am) / scale)))
        if err <= TABLE_RTOL or m >= 512:
            return HermiteTable(s, w, t.R, t.Rd, (float(q_range[0]), float(q_range[1])), err,
                                t.err_nngp, t.err_ntk)
        m *= 2


def _array_literal(A: np.ndarray) -> str:
    """An exact float64 literal: the little-endian bytes in base64, wrapped at 96 characters."""
    A = np.ascontiguousarray(A, dtype="<f8")
    text = base64.b64encode(A.tobytes()).decode("ascii")
    lines = "\n".join(f"    {text[i:i + 96]!r}" for i in range(0, len(text), 96))
    return f"_array((\n{lines}\n), {A.shape!r})"


# -- activation sources --------------------------------------------------------------------------
_HELPERS = '''\
import base64

import numpy
import jax
import jax.numpy
import jax.scipy.special

#: |rho| this close to 1 counts as 1 (8 ulp of 1: the round-off of c / sqrt(q1 q2) itself).
RHO_SNAP = 8 * 2.0**-53


def _array(text, shape):
    """A float64 table stored as base64 of its little-endian bytes."""
    return numpy.frombuffer(base64.b64decode(text), dtype="<f8").reshape(shape).astype(numpy.float64)


def _rho(c, q1, q2):
    """c/sqrt(q1 q2) clipped to [-1, 1]; 0 where a variance is 0.  Within RHO_SNAP of +-1 it
    is +-1: on the diagonal of K(X, X) neural-tangents' covariance and variance differ by an
    ulp or two, and the angle of rho = 1 - 2e-16 would be 2e-8 instead of 0."""
    s = jax.numpy.sqrt(q1 * q2)
    ok = s > 0
    r = jax.numpy.clip(c / jax.numpy.where(ok, s, 1.0), -1.0, 1.0)
    r = jax.numpy.where(jax.numpy.abs(r) >= 1.0 - RHO_SNAP, jax.numpy.sign(r), r)
    return jax.numpy.where(ok, r, 0.0)


def _like(value, c):
    """value broadcast to the shape and dtype of c (constants too)."""
    return jax.numpy.zeros_like(c) + value


def _coefficients(q, s_nodes, w, table, lo, hi):
    """r_l(q) by barycentric interpolation in s = sqrt(q); NaN outside the table's range."""
    s = jax.numpy.sqrt(q)[..., None]
    diff = s - s_nodes
    exact = diff == 0.0
    C = w / jax.numpy.where(exact, 1.0, diff)
    C = jax.numpy.where(jax.numpy.any(exact, axis=-1, keepdims=True), jax.numpy.where(exact, 1.0, 0.0), C)
    r = (C @ table) / jax.numpy.sum(C, axis=-1, keepdims=True)
    inside = (s >= lo * (1 - 1e-12)) & (s <= hi * (1 + 1e-12))
    return jax.numpy.where(inside, r, jax.numpy.nan)


def _series(r1, r2, rho):
    """sum_l r1_l r2_l rho^l."""
    powers = rho[..., None] ** jax.numpy.arange(r1.shape[-1])
    return jax.numpy.sum(r1 * r2 * powers, axis=-1)


def _series_d(r1, r2, rho, s):
    """sum_{l>=1} l r1_l r2_l rho^(l-1) / s."""
    L = r1.shape[-1]
    l = jax.numpy.arange(1, L)
    powers = rho[..., None] ** (l - 1)
    total = jax.numpy.sum(l * r1[..., 1:] * r2[..., 1:] * powers, axis=-1)
    ok = s > 0
    return jax.numpy.where(ok, total / jax.numpy.where(ok, s, 1.0), 0.0)
'''


def _identifier(text: str) -> str:
    out = "".join(ch if ch.isalnum() else "_" for ch in text)
    return ("a_" + out) if not out[:1].isalpha() else out


def activation_source(act, name: str | None = None, q_range: tuple[float, float] | None = None) -> str:
    """Python source defining ``<name>_fn``, ``<name>_nngp_fn`` and ``<name>_d_nngp_fn`` (see the
    module docstring); the shared helpers are in :func:`module_source`'s header."""
    dual = act.dual
    name = _identifier(name or act.label)
    sig_lines, sig = jax_code(act.expr)
    out = [f"# {act.label}: sigma(x) = {act.expr}; dual: {dual.method} ({dual.rule})\n",
           f"def {name}_fn(x):\n", _body(sig_lines, f"_like({sig}, x)")]
    if dual.method == CLOSED_FORM:
        head = "    q1, q2, c = var1, var2, cov12\n    rho = _rho(c, q1, q2)\n"

        def fn(fname, expr, extra=""):
            if expr == 0:
                return f"\n\ndef {fname}(cov12, var1, var2):\n    return jax.numpy.zeros_like(cov12 + var1 + var2)\n"
            lines, res = jax_code(expr)
            dom = ""
            if dual.domain:  # NaN where the Gaussian expectation does not exist
                conds = " & ".join(f"({jax_code(d)[1]} > 0)" for d in dual.domain)
                dom = f"    value = jax.numpy.where({conds}, value, jax.numpy.nan)\n"
            body = "".join(f"    {a} = {b}\n" for a, b in lines) + f"    value = _like({res}, c)\n" + dom
            return f"\n\ndef {fname}(cov12, var1, var2):\n{extra}{head}{body}    return value\n"

        out.append(fn(f"{name}_nngp_fn", dual.nngp_rho))
        ntk = dual.ntk_rho
        if ntk is None:  # zero-a.e.: σ' = 0 almost everywhere (sign, step); else Price's ∂k/∂c
            ntk = sp.S.Zero if dual.ntk_convention == "zero-a.e." else dual.price_rho
        out.append(fn(f"{name}_d_nngp_fn", ntk))
        return "".join(out)
    q_range = tuple(act.q_range if q_range is None else q_range)
    if len(q_range) != 2 or not (0 < float(q_range[0]) < float(q_range[1]) < np.inf):
        raise ParameterError(f"q_range must be (q_min, q_max) with 0 < q_min < q_max < inf, got {q_range!r}")
    tab = hermite_table(dual, q_range)
    lo, hi = float(tab.s[0]), float(tab.s[-1])
    out.append(f"\n\n# r_l(q) at {tab.s.size} Chebyshev points in sqrt(q), q in [{q_range[0]!r}, {q_range[1]!r}], "
               f"degree {tab.R.shape[1] - 1};\n# relative errors: interpolation {tab.interp_error:.1e}, series "
               f"NNGP {tab.err_nngp:.1e}, NTK {tab.err_ntk:.1e}\n")
    out.append(f"{name}_S = {_array_literal(tab.s)}\n{name}_W = {_array_literal(tab.w)}\n")
    out.append(f"{name}_R = {_array_literal(tab.R)}\n")
    if tab.Rd is not None:
        out.append(f"{name}_RD = {_array_literal(tab.Rd)}\n")
    coef = f"_coefficients({{q}}, {name}_S, {name}_W, {{T}}, {lo!r}, {hi!r})"
    out.append(f"\n\ndef {name}_nngp_fn(cov12, var1, var2):\n"
               f"    r1 = {coef.format(q='var1', T=name + '_R')}\n"
               f"    r2 = {coef.format(q='var2', T=name + '_R')}\n"
               f"    return _series(r1, r2, _rho(cov12, var1, var2))\n")
    if tab.Rd is not None:  # σ jumps: k̇ from the coefficients of the a.e. derivative
        out.append(f"\n\ndef {name}_d_nngp_fn(cov12, var1, var2):\n"
                   f"    r1 = {coef.format(q='var1', T=name + '_RD')}\n"
                   f"    r2 = {coef.format(q='var2', T=name + '_RD')}\n"
                   f"    return _series(r1, r2, _rho(cov12, var1, var2))\n")
    else:
        out.append(f"\n\ndef {name}_d_nngp_fn(cov12, var1, var2):\n"
                   f"    r1 = {coef.format(q='var1', T=name + '_R')}\n"
                   f"    r2 = {coef.format(q='var2', T=name + '_R')}\n"
                   f"    return _series_d(r1, r2, _rho(cov12, var1, var2), jax.numpy.sqrt(var1 * var2))\n")
    return "".join(out)


def module_source(body: str, doc: str) -> str:
    """A complete module: docstring, imports and helpers, then ``body``."""
    return f'"""{doc}"""\n' + _HELPERS + "\n\n" + body


def run_source(text: str) -> dict:
    """Execute generated text (from SymPy trees and numbers only) in a fresh namespace."""
    require_jax()
    namespace: dict = {"__name__": "dualcalc_generated_jax"}
    exec(compile(text, "<dualcalc jax source>", "exec"), namespace)  # noqa: S102 - generated, not user text
    return namespace


def activation_functions(act, q_range: tuple[float, float] | None = None):
    """(fn, nngp_fn, d_nngp_fn) as JAX functions."""
    name = _identifier(act.label)
    ns = run_source(module_source(activation_source(act, name, q_range), f"JAX dual of {act.label}."))
    return ns[f"{name}_fn"], ns[f"{name}_nngp_fn"], ns[f"{name}_d_nngp_fn"]


def activation_to_stax(act, q_range: tuple[float, float] | None = None):
    """``stax.Elementwise(fn, nngp_fn, d_nngp_fn)`` of an activation."""
    stax = require_stax()
    return stax.Elementwise(*activation_functions(act, q_range))


# -- networks ------------------------------------------------------------------------------------
def network_source(layers: list[tuple], q_range: tuple[float, float] | None = None) -> str:
    """A module with the activations' functions and ``make_stax()`` returning ``stax.serial(...)``.

    ``layers``: ("dense", W_std, b_std or None, parameterization, width) and ("act", Activation).
    """
    acts: dict[str, object] = {}
    body, calls = [], []
    for kind, *rest in layers:
        if kind == "dense":
            w, b, param, width = rest
            calls.append(f"stax.Dense({width}, W_std={w!r}, b_std={b!r}, parameterization={param!r})")
        else:
            (act,) = rest
            name = _identifier(act.label)
            key = name
            i = 1
            while key in acts and acts[key] is not act:
                i += 1
                key = f"{name}_{i}"
            if key not in acts:
                acts[key] = act
                body.append(activation_source(act, key, q_range))
            calls.append(f"stax.Elementwise({key}_fn, {key}_nngp_fn, {key}_d_nngp_fn)")
    make = ("\n\ndef make_stax():\n    \"\"\"(init_fn, apply_fn, kernel_fn) of the network.\"\"\"\n"
            "    from neural_tangents import stax\n\n    return stax.serial(\n"
            + textwrap.indent(",\n".join(calls), " " * 8) + ",\n    )\n")
    return module_source("\n\n".join(body) + make,
                         "neural-tangents stax network generated by dualcalc (call make_stax()).")


def network_to_stax(layers: list[tuple], q_range: tuple[float, float] | None = None):
    require_stax()
    return run_source(network_source(layers, q_range))["make_stax"]()


__all__ = ["activation_source", "activation_functions", "activation_to_stax", "network_source",
           "network_to_stax", "hermite_table", "jax_code", "require_jax", "require_stax"]

