"""Safe formula parser: text → SymPy, through an ``ast`` whitelist.

User text never reaches ``eval``, ``exec``, ``sympify`` or ``parse_expr``.  The
text is parsed by :func:`ast.parse` (which only builds a syntax tree, it runs
nothing) and the tree is walked node by node; every node type, name and
function must be on a whitelist, and SymPy objects are constructed directly.

Allowed: numbers, the variables of the context (``x`` for activations;
``q1, q2, c, rho`` for dual formulas), named parameters with values, the
operators ``+ - * / **`` and unary minus, comparisons inside ``where``, calls
of the functions in :data:`FUNCTIONS`, and the constants ``pi`` and ``e``.
"""
from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Mapping
from fractions import Fraction
from numbers import Real

import sympy as sp

from .errors import FormulaError, ParameterError
from .symbols import RESERVED, Phi, c, q1, q2, rho, x

MAX_LENGTH = 2000
MAX_DEPTH = 40
MAX_NODES = 600


def _one(f: Callable[[sp.Expr], sp.Expr]) -> tuple[int, Callable]:
    return (1, f)


def _hermite_he(n: sp.Expr, t: sp.Expr) -> sp.Expr:
    if not (n.is_Integer and n >= 0):
        raise FormulaError("He(n, x) needs a non-negative integer degree n, got " f"{n}")
    if int(n) > 200:
        raise FormulaError(f"He(n, x): degree {n} is too large (at most 200)")
    return sp.hermite_prob(int(n), t)


def _factorial(n: sp.Expr) -> sp.Expr:
    if not (n.is_Integer and n >= 0):
        raise FormulaError(f"factorial(n) needs a non-negative integer constant n, got {n}")
    if int(n) > 200:
        raise FormulaError(f"factorial(n): n = {n} is too large (at most 200)")
    return sp.factorial(int(n))


def _where(cond, a, b):
    if not isinstance(cond, sp.logic.boolalg.Boolean) or cond in (sp.true, sp.false):
        if cond is sp.true:
            return a
        if cond is sp.false:
            return b
        raise FormulaError("where(cond, a, b): the first argument must be a comparison such as x > 0")
    return sp.Piecewise((a, cond), (b, True))


def _max(*args):
    return sp.Max(*args)


def _min(*args):
    return sp.Min(*args)


#: name → (number of arguments or -1 for "two or more", builder)
FUNCTIONS: dict[str, tuple[int, Callable]] = {
    "exp": _one(sp.exp),
    "log": _one(sp.log),
    "sqrt": _one(sp.sqrt),
    "sin": _one(sp.sin),
    "cos": _one(sp.cos),
    "tan": _one(sp.tan),
    "tanh": _one(sp.tanh),
    "sinh": _one(sp.sinh),
    "cosh": _one(sp.cosh),
    "asin": _one(sp.asin),
    "acos": _one(sp.acos),
    "atan": _one(sp.atan),
    "asinh": _one(sp.asinh),
    "erf": _one(sp.erf),
    "erfc": _one(sp.erfc),
    "Phi": _one(Phi),
    "abs": _one(sp.Abs),
    "sign": _one(sp.sign),
    "heaviside": _one(lambda t: sp.Heaviside(t, sp.S.Half)),
    "step": _one(lambda t: sp.Heaviside(t, sp.S.Half)),
    "relu": _one(lambda t: sp.Max(t, 0)),
    "sigmoid": _one(lambda t: 1 / (1 + sp.exp(-t))),
    "softplus": _one(lambda t: sp.log(1 + sp.exp(t))),
    "max": (-1, _max),
    "min": (-1, _min),
    "atan2": (2, sp.atan2),
    "where": (3, _where),
    "He": (2, _hermite_he),
    "factorial": _one(_factorial),
}

CONSTANTS: dict[str, sp.Expr] = {"pi": sp.pi, "e": sp.E, "E": sp.E}

ACTIVATION_VARIABLES: dict[str, sp.Symbol] = {"x": x}
DUAL_VARIABLES: dict[str, sp.Symbol] = {"q1": q1, "q2": q2, "c": c, "rho": rho}

_BINOPS: dict[type, Callable] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
}
_COMPARE: dict[type, Callable] = {
    ast.Gt: sp.StrictGreaterThan,
    ast.GtE: sp.GreaterThan,
    ast.Lt: sp.StrictLessThan,
    ast.LtE: sp.LessThan,
}
_OPERATOR_SPELLING = {
    ast.BitXor: "'^' (use ** for powers)",
    ast.FloorDiv: "'//'",
    ast.Mod: "'%'",
    ast.MatMult: "'@'",
    ast.BitAnd: "'&'",
    ast.BitOr: "'|'",
    ast.LShift: "'<<'",
    ast.RShift: "'>>'",
}


def exact_number(value: Real | str) -> sp.Expr:
    """A Python number (or its decimal text) as an exact SymPy rational.

    ``0.1`` becomes 1/10, not the binary float nearest to it, so that catalog
    matching and simplification see the number the user wrote.
    """
    if isinstance(value, bool):
        raise ParameterError(f"a boolean is not a number: {value!r}")
    if isinstance(value, int | sp.Integer):
        return sp.Integer(int(value))
    if isinstance(value, sp.Expr) and value.is_number:
        return value
    try:
        f = Fraction(str(value)) if isinstance(value, float | str) else Fraction(value)
    except (ValueError, TypeError, ZeroDivisionError) as err:
        raise ParameterError(f"not a finite real number: {value!r}") from err
    return sp.Rational(f.numerator, f.denominator)


def parameter_values(params: Mapping[str, object]) -> dict[str, sp.Expr]:
    """Validate parameter names and convert their values to exact numbers."""
    out: dict[str, sp.Expr] = {}
    for name, value in params.items():
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise ParameterError(f"invalid parameter name {name!r}")
        if name in RESERVED or name in FUNCTIONS:
            raise ParameterError(
                f"parameter name {name!r} is reserved (reserved: {', '.join(sorted(RESERVED))}, "
                "and every function name)"
            )
        if isinstance(value, float) and not (value == value and abs(value) != float("inf")):
            raise ParameterError(f"parameter {name!r} must be finite, got {value!r}")
        if not isinstance(value, Real | sp.Expr) or isinstance(value, bool):
            raise ParameterError(f"parameter {name!r} must be a real number, got {type(value).__name__}")
        out[name] = exact_number(value)
    return out


def allowed_summary(variables: Iterable[str]) -> str:
    return (
        f"variables: {', '.join(variables)}; functions: {', '.join(sorted(FUNCTIONS))}; "
        "constants: pi, e; operators: + - * / ** and unary minus; comparisons < <= > >= inside where()"
    )


class _Builder:
    def __init__(self, text: str, variables: Mapping[str, sp.Symbol], params: Mapping[str, sp.Expr],
                 symbolic_params: Iterable[str]):
        self.text = text
        self.variables = dict(variables)
        self.params = dict(params)
        self.symbolic = set(symbolic_params)
        self.used_params: set[str] = set()
        self.nodes = 0

    def fail(self, node: ast.AST | None, what: str) -> FormulaError:
        where = ""
        if node is not None and hasattr(node, "col_offset"):
            where = f" at column {node.col_offset + 1}"
        return FormulaError(
            f"in formula {self.text!r}{where}: {what}. Allowed: {allowed_summary(self.variables)}"
        )

    def build(self, node: ast.AST, depth: int = 0):
        self.nodes += 1
        if depth > MAX_DEPTH:
            raise self.fail(node, f"formula nested too deeply (more than {MAX_DEPTH} levels)")
        if self.nodes > MAX_NODES:
            raise self.fail(node, f"formula too large (more than {MAX_NODES} syntax nodes)")
        d = depth + 1
        if isinstance(node, ast.Expression):
            return self.build(node.body, d)
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise self.fail(node, f"literal {v!r} is not allowed, only real numbers")
            if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
                raise self.fail(node, "non-finite number")
            # The source text of the literal, so 0.1 stays exactly 1/10.
            seg = ast.get_source_segment(self.text, node)
            return exact_number(seg if isinstance(v, float) and seg else v)
        if isinstance(node, ast.Name):
            name = node.id
            if name.startswith("__"):
                raise self.fail(node, f"dunder name {name!r} is not allowed")
            if name in self.variables:
                return self.variables[name]
            if name in CONSTANTS:
                return CONSTANTS[name]
            if name in self.params:
                self.used_params.add(name)
                return self.params[name]
            if name in self.symbolic:
                self.used_params.add(name)
                return sp.Symbol(name, real=True)
            if name in FUNCTIONS:
                raise self.fail(node, f"function {name!r} must be called, e.g. {name}(x)")
            raise self.fail(node, f"unknown name {name!r} (a parameter needs a value, e.g. {name}=1.0)")
        if isinstance(node, ast.BinOp):
            op = type(node.op)
            if op not in _BINOPS:
                raise self.fail(node, f"operator {_OPERATOR_SPELLING.get(op, op.__name__)} is not allowed")
            left = self.build(node.left, d)
            right = self.build(node.right, d)
            if op is ast.Pow and right.is_number and abs(right) > 64:
                raise self.fail(node, f"exponent {right} is too large (|exponent| ≤ 64)")
            if op is ast.Div and right == 0:
                raise self.fail(node, "division by zero")
            return _BINOPS[op](left, right)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return -self.build(node.operand, d)
            if isinstance(node.op, ast.UAdd):
                return self.build(node.operand, d)
            raise self.fail(node, f"unary operator {type(node.op).__name__} is not allowed")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise self.fail(node, "only plain function calls such as exp(x) are allowed "
                                      "(no attribute access or computed callables)")
            name = node.func.id
            if name not in FUNCTIONS:
                raise self.fail(node, f"unknown function {name!r}")
            if node.keywords:
                raise self.fail(node, f"keyword arguments are not allowed in {name}()")
            arity, builder = FUNCTIONS[name]
            if name == "where":
                if len(node.args) != 3:
                    raise self.fail(node, "where(cond, a, b) takes three arguments")
                cond = self.build_condition(node.args[0], d)
                return _where(cond, self.build(node.args[1], d), self.build(node.args[2], d))
            args = [self.build(a, d) for a in node.args]
            if arity == -1 and len(args) < 2:
                raise self.fail(node, f"{name}() takes two or more arguments")
            if arity > 0 and len(args) != arity:
                raise self.fail(node, f"{name}() takes {arity} argument{'s' * (arity > 1)}, got {len(args)}")
            try:
                return builder(*args)
            except FormulaError as err:
                raise self.fail(node, str(err)) from None
        if isinstance(node, ast.Compare):
            raise self.fail(node, "comparisons are only allowed as the first argument of where()")
        kind = type(node).__name__
        hint = {
            "Attribute": "attribute access",
            "Subscript": "subscripts",
            "Lambda": "lambdas",
            "ListComp": "comprehensions",
            "GeneratorExp": "comprehensions",
            "SetComp": "comprehensions",
            "DictComp": "comprehensions",
            "JoinedStr": "strings",
            "IfExp": "conditional expressions (use where(cond, a, b))",
            "BoolOp": "and/or",
            "NamedExpr": "assignment",
        }.get(kind, kind)
        raise self.fail(node, f"{hint} not allowed")

    def build_condition(self, node: ast.AST, depth: int):
        if not isinstance(node, ast.Compare) or len(node.ops) != 1:
            raise self.fail(node, "where(cond, a, b): cond must be one comparison such as x > 0")
        op = type(node.ops[0])
        if op not in _COMPARE:
            raise self.fail(node, "only < <= > >= are allowed in a condition")
        return _COMPARE[op](self.build(node.left, depth), self.build(node.comparators[0], depth))


def parse_formula(
    text: str,
    params: Mapping[str, object] | None = None,
    *,
    variables: Mapping[str, sp.Symbol] = ACTIVATION_VARIABLES,
    symbolic_params: Iterable[str] = (),
    require_all_params: bool = False,
) -> sp.Expr:
    """Parse formula text into a SymPy expression, safely.

    Parameters
    ----------
    text : the formula, e.g. ``"a*sin(b*x)"``.
    params : values of named parameters (numbers; converted to exact rationals).
    variables : the free variables the formula may use (``x`` by default).
    symbolic_params : parameter names kept as SymPy symbols instead of values.
    require_all_params : refuse parameters that the formula does not use.
    """
    if not isinstance(text, str):
        raise FormulaError(f"a formula must be a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise FormulaError(f"formula is too long ({len(text)} characters, at most {MAX_LENGTH})")
    if not text.strip():
        raise FormulaError("empty formula")
    values = parameter_values(params or {})
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise FormulaError(f"cannot parse formula {text!r}: {err.msg} at column {err.offset}. "
                           f"Allowed: {allowed_summary(variables)}") from None
    except (ValueError, MemoryError, RecursionError) as err:
        raise FormulaError(f"cannot parse formula {text!r}: {err}") from None
    builder = _Builder(text.strip(), variables, values, symbolic_params)
    try:
        expr = builder.build(tree)
    except RecursionError:
        raise FormulaError(f"formula {text!r} is nested too deeply") from None
    # (a Symbol such as x is also a sympy Boolean: only non-Expr Booleans are conditions)
    if isinstance(expr, sp.logic.boolalg.Boolean) and not isinstance(expr, sp.Expr):
        raise FormulaError(f"formula {text!r} is a condition, not a number")
    if require_all_params:
        unused = set(values) - builder.used_params
        if unused:
            raise ParameterError(
                f"parameter(s) {', '.join(sorted(unused))} not used by formula {text!r}"
            )
    if expr.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        raise FormulaError(f"formula {text!r} is infinite or undefined")
    return expr
