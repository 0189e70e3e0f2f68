r"""SymPy printers for the two targets, and the shared dual-function body.

* :class:`NumbaPrinter` (a :class:`sympy.printing.pycode.PythonCodePrinter`): scalar
  ``math``-module Python for ``@njit`` functions.  ``acos``/``asin``/``exp`` become the
  inline polynomial helpers of :mod:`codegen.mathlib` so that loops vectorise.
* :class:`CudaPrinter` (a :class:`sympy.printing.c.C99CodePrinter`): CUDA C in a
  ``double`` or ``float`` variant (``sqrt``/``sqrtf``, literals with an ``f`` suffix).

Both print the bivariate normal CDF ``Phi2(h, k, r)`` of :mod:`dualcalc.bvn` (matched by
its class name) as a call of the scalar Genz Φ₂ of :mod:`codegen.mathlib` and record it in
``helpers_used``, so that a generated module carries that helper only when a dual uses it.

Both print constants as literals (no ``M_PI``), small integer powers as products,
half-integer powers through ``sqrt``, and guard ``sqrt`` of expressions that are
non-negative only mathematically (round-off can make them −1e−17): ``sqrt(max(e, 0))``.
They are the only printers of the Numba and CUDA targets, fully connected and convolutional
alike; :meth:`~NumbaPrinter.statement` and :meth:`~NumbaPrinter.helper_source` give a target
the assignment syntax and the text of the helpers its printed duals call.

:func:`dual_body` runs common-subexpression elimination over k and k̇ *together*
(they share θ, √(q1q2−c²), …) and returns the statements of one dual function.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import sympy as sp
from sympy.printing.c import C99CodePrinter
from sympy.printing.pycode import PythonCodePrinter

from dualcalc.symbols import c, q1, q2, rho

from . import mathlib

#: Per-point square roots of the variances, substituted for sqrt(q1), sqrt(q2).
s1 = sp.Symbol("s1", positive=True)
s2 = sp.Symbol("s2", positive=True)

_MAX_PRODUCT_POWER = 8


class Pos(sp.Function):
    """max(x, 0): marks a square-root argument that is non-negative only mathematically."""

    nargs = 1


def fold_constants(expr: sp.Expr) -> sp.Expr:
    """Replace every constant subtree (π/(2π²), cos(1), √2 …) by one float literal."""
    if expr.is_Atom:
        if expr.is_number and not expr.is_Integer:  # pi, E, 3/2, …
            return sp.Float(expr.evalf(30), 30)
        return expr
    if expr.is_number:
        val = expr.evalf(30)
        if val.is_real and val.is_finite:
            return sp.Float(val, 30)
        return expr
    if isinstance(expr, sp.Pow):  # keep the exponent exact (integer/half-integer forms)
        return sp.Pow(fold_constants(expr.base), expr.exp, evaluate=False)
    return expr.func(*[fold_constants(a) for a in expr.args])


def _roots_and_guards(expr: sp.Expr) -> sp.Expr:
    """q^(n/2) → s^n for the per-point roots; sqrt(e) → sqrt(Pos(e)) unless e ≥ 0 is known."""
    if expr.is_Atom:
        return expr
    args = [_roots_and_guards(a) for a in expr.args]
    if isinstance(expr, sp.Pow):
        b, e = expr.base, expr.exp
        if e.is_Rational and e.q == 2:
            if b == q1:
                return sp.Pow(s1, e.p, evaluate=False) if e.p != 1 else s1
            if b == q2:
                return sp.Pow(s2, e.p, evaluate=False) if e.p != 1 else s2
            if not b.is_nonnegative:
                return sp.Pow(Pos(args[0]), e, evaluate=False)
        return sp.Pow(args[0], args[1], evaluate=False)
    return expr.func(*args)


def prepare(expr: sp.Expr) -> sp.Expr:
    """The form the printers see: √q1, √q2 as the per-point symbols s1, s2; round-off-negative
    square-root arguments guarded; constants folded to float literals."""
    return fold_constants(_roots_and_guards(sp.sympify(expr)))


class _Common:
    """Shared rules of both printers (mixed into the target printers)."""

    def _lit(self, value: float) -> str:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def _print_Float(self, expr):
        return self._lit(float(expr))

    def _print_Rational(self, expr):
        return self._lit(float(expr.p) / float(expr.q))

    def _print_Integer(self, expr):
        return self._lit(float(int(expr)))

    def _print_Half(self, expr):
        return self._lit(0.5)

    def _print_One(self, expr):
        return self._lit(1.0)

    def _print_NegativeOne(self, expr):
        return self._lit(-1.0)

    def _print_Zero(self, expr):
        return self._lit(0.0)

    def _print_Pi(self, expr):
        return self._lit(math.pi)

    def _print_Exp1(self, expr):
        return self._lit(math.e)

    def _sqrt(self, base: sp.Expr) -> str:
        return f"{self._fn('sqrt')}({self._print(base)})"

    def _print_Pos(self, expr):
        return self._pos(self._print(expr.args[0]))

    def _product(self, b: str, n: int) -> str:
        return "(" + "*".join([b] * n) + ")"

    def _print_Pow(self, expr, rational=False):
        b, e = expr.base, expr.exp
        if e.is_Rational and e.q in (1, 2) and abs(e.p) <= 2 * _MAX_PRODUCT_POWER:
            n = abs(int(e.p))
            bs = self.parenthesize(b, 100)  # atom-tight
            if e.q == 1:
                body = self._product(bs, n) if n > 1 else bs
            else:
                root = self._sqrt(b)
                whole = n // 2
                body = root if whole == 0 else f"({self._product(bs, whole) if whole > 1 else bs}*{root})"
            if e.p < 0:
                return f"({self._lit(1.0)}/{body})"
            return body
        return self._general_pow(b, e)

    def _print_sqrt(self, expr):
        return self._sqrt(expr.args[0])


class NumbaPrinter(_Common, PythonCodePrinter):
    """Scalar Python for ``@njit`` code: math-module calls, inline polynomial acos/asin/exp."""

    #: functions printed as the vectorisable helpers of codegen.mathlib
    INLINE = {"acos": "_acos", "asin": "_asin", "exp": "_exp"}

    def __init__(self, settings=None):
        super().__init__(dict(settings or {}, fully_qualified_modules=True))
        self.helpers_used: set[str] = set()

    def statement(self, name: str, text: str, declare: bool = True) -> str:
        """``name = text`` (``declare`` matters only in C)."""
        return f"{name} = {text}"

    def helper_names(self, skip=()) -> list[str]:
        """The :mod:`codegen.mathlib` helpers that the printed text calls, with the helpers
        they call, in emission order (callees first); ``skip``: names the module defines
        itself (their callees are not added for them)."""
        need: set[str] = set()

        def add(h):
            if h not in need and h not in skip:
                need.add(h)
                for dep in mathlib.NUMBA_HELPER_DEPS.get(h, ()):
                    add(dep)

        for h in self.helpers_used:
            add(h)
        return [h for h in mathlib.NUMBA_HELPER_ORDER if h in need]

    def helper_source(self, skip=()) -> str:
        """Numba source of :meth:`helper_names` (``_exp`` needs ``bits_to_f64`` of
        :mod:`codegen.numba_support` imported by the module)."""
        return "".join(mathlib.NUMBA_HELPERS[h] for h in self.helper_names(skip))

    def _lit(self, value: float) -> str:
        if math.isinf(value):
            return "math.inf" if value > 0 else "-math.inf"
        return repr(float(value))

    def _fn(self, name: str) -> str:
        return f"math.{name}"

    def _pos(self, inner: str) -> str:
        return f"max({inner}, 0.0)"

    def _general_pow(self, b, e) -> str:
        return f"{self.parenthesize(b, 100)}**{self.parenthesize(e, 100)}"

    def _inline(self, name: str, expr) -> str:
        helper = self.INLINE[name]
        self.helpers_used.add(helper)
        return f"{helper}({self._print(expr.args[0])})"

    def _print_acos(self, expr):
        return self._inline("acos", expr)

    def _print_asin(self, expr):
        return self._inline("asin", expr)

    def _print_exp(self, expr):
        return self._inline("exp", expr)

    def _print_Phi2(self, expr):
        """dualcalc.bvn.Phi2 (recognised by its class name): the scalar Genz Φ₂ of codegen.mathlib."""
        self.helpers_used.add("_phi2")
        return f"_phi2({', '.join(self._print(a) for a in expr.args)})"

    def _print_Abs(self, expr):
        return f"abs({self._print(expr.args[0])})"

    def _print_sign(self, expr):
        a = self._print(expr.args[0])
        return f"(1.0 if {a} > 0.0 else (-1.0 if {a} < 0.0 else 0.0))"

    def _print_Heaviside(self, expr):
        a = self._print(expr.args[0])
        h0 = expr.args[1] if len(expr.args) > 1 else sp.S.Half
        return f"(1.0 if {a} > 0.0 else ({self._print(h0)} if {a} == 0.0 else 0.0))"

    def _print_Max(self, expr):
        out = self._print(expr.args[0])
        for a in expr.args[1:]:
            out = f"max({out}, {self._print(a)})"
        return out

    def _print_Min(self, expr):
        out = self._print(expr.args[0])
        for a in expr.args[1:]:
            out = f"min({out}, {self._print(a)})"
        return out


class CudaPrinter(_Common, C99CodePrinter):
    """CUDA C, ``precision="double"`` or ``"float"`` (math functions and literals follow)."""

    _FUNCS = {"sqrt", "exp", "log", "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "sinh",
              "cosh", "tanh", "asinh", "acosh", "atanh", "erf", "erfc", "pow", "fabs", "fmax", "fmin",
              "copysign", "tgamma", "lgamma", "log1p", "expm1"}

    def __init__(self, precision: str = "double", settings=None):
        if precision not in ("double", "float"):
            raise ValueError("precision must be 'double' or 'float'")
        self.precision = precision
        # constants are printed as literals: no M_PI-style macros (NVRTC and C++ lack them)
        super().__init__(dict({"math_macros": {}}, **(settings or {})))
        self.helpers_used: set[str] = set()  # "phi2": the __device__ Φ₂ of codegen.mathlib.cuda_phi2

    def statement(self, name: str, text: str, declare: bool = True) -> str:
        """``const T name = text;``, or ``name = text;`` for a variable declared before."""
        return f"const {self.ctype} {name} = {text};" if declare else f"{name} = {text};"

    def helper_source(self) -> str:
        """``__device__`` source of the helpers the printed text calls (Φ₂ in this precision)."""
        return mathlib.cuda_phi2(self.precision) if "phi2" in self.helpers_used else ""

    @property
    def ctype(self) -> str:
        return self.precision

    def _lit(self, value: float) -> str:
        if math.isinf(value):
            return ("" if value > 0 else "-") + ("CUDART_INF_F" if self.precision == "float" else "CUDART_INF")
        if self.precision == "float":
            if 0.0 < abs(value) < 1.1754943508222875e-38:  # a floor such as 1e-300: keep it non-zero
                value = math.copysign(1.1754943508222875e-38, value)
            s = f"{value:.9g}"
            if not any(ch in s for ch in ".e"):
                s += ".0"
            return s + "f"
        s = repr(float(value))
        return s

    def _fn(self, name: str) -> str:
        return name + "f" if self.precision == "float" else name

    def _pos(self, inner: str) -> str:
        return f"{self._fn('fmax')}({inner}, {self._lit(0.0)})"

    def _general_pow(self, b, e) -> str:
        return f"{self._fn('pow')}({self._print(b)}, {self._print(e)})"

    def _print_Function(self, expr):
        name = expr.func.__name__
        if name in self._FUNCS:
            return f"{self._fn(name)}({', '.join(self._print(a) for a in expr.args)})"
        return super()._print_Function(expr)

    def _print_exp(self, expr):
        return f"{self._fn('exp')}({self._print(expr.args[0])})"

    def _print_Phi2(self, expr):
        """dualcalc.bvn.Phi2 (by class name): ``dc_phi2_f64``/``dc_phi2_f32`` of codegen.mathlib.cuda_phi2."""
        self.helpers_used.add("phi2")
        sfx = "f32" if self.precision == "float" else "f64"
        return f"dc_phi2_{sfx}({', '.join(self._print(a) for a in expr.args)})"

    def _clip1(self, arg) -> str:
        a = self._print(arg)
        if arg == rho:  # already clipped to [-1, 1]
            return a
        one = self._lit(1.0)
        return f"{self._fn('fmin')}({self._fn('fmax')}({a}, -{one}), {one})"

    def _print_acos(self, expr):
        return f"{self._fn('acos')}({self._clip1(expr.args[0])})"

    def _print_asin(self, expr):
        return f"{self._fn('asin')}({self._clip1(expr.args[0])})"

    def _print_Abs(self, expr):
        return f"{self._fn('fabs')}({self._print(expr.args[0])})"

    def _print_sign(self, expr):
        a = self._print(expr.args[0])
        return f"(({self.ctype})(({a} > 0) - ({a} < 0)))"

    def _print_Heaviside(self, expr):
        a = self._print(expr.args[0])
        h0 = expr.args[1] if len(expr.args) > 1 else sp.S.Half
        return f"({a} > 0 ? {self._lit(1.0)} : ({a} == 0 ? {self._print(h0)} : {self._lit(0.0)}))"

    def _print_Max(self, expr):
        out = self._print(expr.args[0])
        for a in expr.args[1:]:
            out = f"{self._fn('fmax')}({out}, {self._print(a)})"
        return out

    def _print_Min(self, expr):
        out = self._print(expr.args[0])
        for a in expr.args[1:]:
            out = f"{self._fn('fmin')}({out}, {self._print(a)})"
        return out

    def _print_Piecewise(self, expr):
        # nested ternaries; the last branch is the fallback
        parts = list(expr.args)
        out = self._print(parts[-1][0])
        for e, cond in reversed(parts[:-1]):
            out = f"(({self._print(cond)}) ? ({self._print(e)}) : ({out}))"
        return out


_ROW = {q1, s1}
_COL = {q2, s2}


def _costly(e: sp.Expr) -> bool:
    """Worth precomputing per point: holds a function, a root or a division."""
    for node in sp.preorder_traversal(e):
        if isinstance(node, sp.Function):
            return True
        if isinstance(node, sp.Pow) and not (node.exp.is_Integer and node.exp > 0):
            return True
    return False


def hoist_per_point(exprs: list[sp.Expr]) -> tuple[list[sp.Expr], list[sp.Expr]]:
    """Move subexpressions of one point's variance out of the pair loop.

    A subtree that depends only on (q1, s1) — or only on (q2, s2) — and costs a root, a
    division or a function call (√(q+1), 1/(1+2q), …) becomes a symbol ``p1_m``/``p2_m``;
    f_m(q1, s1) (the same function serves both sides) is then computed once per point.
    Powers of products of positive factors are split first, and the factors of a product
    are grouped by side.  Returns the rewritten expressions and [f_0, f_1, …].
    """
    found: dict[sp.Expr, int] = {}

    def side(e):
        fs = e.free_symbols
        if fs and fs <= _ROW:
            return 1
        if fs and fs <= _COL:
            return 2
        return 0

    def symbol(e, sd):
        key = e if sd == 1 else e.xreplace({q2: q1, s2: s1})
        m = found.setdefault(key, len(found))
        return sp.Symbol(f"p{sd}_{m}", positive=bool(key.is_positive) or None)

    def walk(e):
        if e.is_Atom:
            return e
        sd = side(e)
        if sd and _costly(e):
            return symbol(e, sd)
        if isinstance(e, sp.Mul):
            groups = {1: [], 2: [], 0: []}
            for a in e.args:
                groups[side(a)].append(a)
            out = [walk(a) for a in groups[0]]
            for sd in (1, 2):
                if groups[sd]:
                    prod = sp.Mul(*groups[sd])
                    out.append(symbol(prod, sd) if _costly(prod) else prod)
            return sp.Mul(*out)
        return e.func(*[walk(a) for a in e.args])

    out = [walk(sp.expand_power_base(e, deep=True)) for e in exprs]
    return out, [k for k, _ in sorted(found.items(), key=lambda kv: kv[1])]


@dataclass(frozen=True)
class DualBody:
    """Statements of one dual function: temporaries (name, text), then k and k̇ texts."""

    temps: tuple[tuple[str, str], ...]
    k: str
    kdot: str
    helpers: frozenset[str]
    uses_rho: bool
    hoisted: tuple[sp.Expr, ...] = ()  # per-point f_m(q1, s1), passed as p1_m / p2_m


def dual_body(k: sp.Expr, kdot: sp.Expr, printer, *, hoist: bool = False) -> DualBody:
    """CSE over (k, k̇) together, printed by ``printer``; inputs are q1, q2, s1, s2, c, rho
    (and p1_m, p2_m with ``hoist``: see :func:`hoist_per_point`)."""
    k, kdot = prepare(k), prepare(kdot)
    hoisted: list[sp.Expr] = []
    if hoist:
        (k, kdot), hoisted = hoist_per_point([k, kdot])
    repl, (k_red, kd_red) = sp.cse([k, kdot], symbols=sp.numbered_symbols("t"), optimizations="basic")
    temps = []
    for sym, sub in repl:
        temps.append((str(sym), printer.doprint(sub)))
    k_text = printer.doprint(k_red)
    kd_text = printer.doprint(kd_red)
    uses_rho = any(e.has(rho) for e in (k, kdot))
    helpers = frozenset(getattr(printer, "helpers_used", set()))
    return DualBody(tuple(temps), k_text, kd_text, helpers, uses_rho, tuple(hoisted))


__all__ = ["Pos", "hoist_per_point", "NumbaPrinter", "CudaPrinter", "DualBody", "dual_body", "prepare", "fold_constants", "s1", "s2",
           "q1", "q2", "c", "rho"]
