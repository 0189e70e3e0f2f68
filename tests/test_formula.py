"""The safe formula parser, catalog-file validation and activation parameters.

Every refused input must be refused with its own specific error (type and message),
and nothing in a formula may ever run: the injection attempts below would create a
marker file if any of them reached eval/exec.
"""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
import sympy as sp

import dualcalc as dc
from dualcalc.catalog import REGISTRY, parse_entry
from dualcalc.errors import CatalogError, FormulaError, ParameterError, UnknownActivationError
from dualcalc.formula import DUAL_VARIABLES, MAX_DEPTH, MAX_LENGTH, MAX_NODES, parse_formula
from dualcalc.symbols import Phi, c, q1, q2, rho, x

# ---------------------------------------------------------------------------
# Accepted forms.
# ---------------------------------------------------------------------------

A = sp.Symbol("a", real=True)


@pytest.mark.parametrize("text, params, expected", [
    ("x", {}, x),
    ("max(x, 0)", {}, sp.Max(x, 0)),
    ("relu(x)", {}, sp.Max(x, 0)),
    ("min(x, 0) + max(x, 0)", {}, sp.Min(x, 0) + sp.Max(x, 0)),
    ("x*erf(x)", {}, x * sp.erf(x)),
    ("a*sin(b*x)", {"a": 2.0, "b": 0.5}, 2 * sp.sin(x / 2)),
    ("0.1*x", {}, sp.Rational(1, 10) * x),                       # decimals stay exact
    ("1e-3*x", {}, sp.Rational(1, 1000) * x),
    ("-x**2 + 3", {}, 3 - x**2),
    ("+x", {}, x),
    ("x**64", {}, x**64),
    ("2**-1*x", {}, x / 2),
    ("exp(-x**2/2)", {}, sp.exp(-x**2 / 2)),
    ("pi*x + e + E", {}, sp.pi * x + 2 * sp.E),
    ("Phi(x)", {}, Phi(x)),
    ("x*Phi(x)", {}, x * Phi(x)),
    ("heaviside(x)", {}, sp.Heaviside(x, sp.S.Half)),
    ("step(x)", {}, sp.Heaviside(x, sp.S.Half)),
    ("sign(x) + abs(x)", {}, sp.sign(x) + sp.Abs(x)),
    ("sigmoid(x)", {}, 1 / (1 + sp.exp(-x))),
    ("softplus(x)", {}, sp.log(1 + sp.exp(x))),
    ("tanh(x) + sinh(x) + cosh(x) + tan(x)", {}, sp.tanh(x) + sp.sinh(x) + sp.cosh(x) + sp.tan(x)),
    ("atan2(x, 1) + asinh(x) + atan(x) + erfc(x)", {}, sp.atan2(x, 1) + sp.asinh(x) + sp.atan(x) + sp.erfc(x)),
    ("where(x > 0, x, 0.5*x)", {}, sp.Piecewise((x, x > 0), (x / 2, True))),
    ("where(x <= 1, x, 1)", {}, sp.Piecewise((x, x <= 1), (1, True))),
    ("He(3, x)", {}, x**3 - 3 * x),
    ("He(n, x)/sqrt(factorial(n))", {"n": 2}, (x**2 - 1) / sp.sqrt(2)),
    ("factorial(4)*x", {}, 24 * x),
    ("factorial(0)*x", {}, x),
    ("log(1 + exp(x))", {}, sp.log(1 + sp.exp(x))),
    ("  x  ", {}, x),
])
def test_accepted(text, params, expected):
    assert sp.simplify(parse_formula(text, params) - expected) == 0


def test_dual_variables_and_symbolic_parameters():
    e = parse_formula("sqrt(q1*q2)*sqrt(1 - rho**2) + c", variables=DUAL_VARIABLES)
    assert e == sp.sqrt(q1 * q2) * sp.sqrt(1 - rho**2) + c
    e = parse_formula("a*x", symbolic_params=["a"])
    assert e == A * x
    with pytest.raises(FormulaError, match="unknown name 'x'"):
        parse_formula("x + c", variables=DUAL_VARIABLES)


def test_parameter_values_are_exact():
    e = parse_formula("alpha*x", {"alpha": 0.01})
    assert e == sp.Rational(1, 100) * x
    assert parse_formula("n*x", {"n": 3}) == 3 * x
    assert parse_formula("a*x", {"a": Fraction(1, 3)}) == x / 3


def test_activation_from_formula_and_parameters():
    act = dc.activation("a*sin(b*x)", a=2.0, b=0.5)
    assert act.params == {"a": 2.0, "b": 0.5}
    assert math.isclose(float(act(1.0)), 2 * math.sin(0.5), rel_tol=1e-15)
    assert dc.activation("x*erf(x)").expr == x * sp.erf(x)
    assert dc.activation("x").expr == x


# ---------------------------------------------------------------------------
# Refused forms: each with its specific error.
# ---------------------------------------------------------------------------

REFUSED = [
    ("x.__class__", "attribute access not allowed"),
    ("x.real", "attribute access not allowed"),
    ("__builtins__", "dunder name '__builtins__' is not allowed"),
    ("x + __x", "dunder name '__x' is not allowed"),
    ("lambda x: x", "lambdas not allowed"),
    ("[x for x in [1]]", "comprehensions not allowed"),
    ("(x for x in [1])", "comprehensions not allowed"),
    ("{x for x in [1]}", "comprehensions not allowed"),
    ("{x: 1 for x in [1]}", "comprehensions not allowed"),
    ("'abc'", "literal 'abc' is not allowed, only real numbers"),
    ("b'abc'", "literal b'abc' is not allowed"),
    ("f'{x}'", "strings not allowed"),
    ("x[0]", "subscripts not allowed"),
    ("y + x", r"unknown name 'y' \(a parameter needs a value, e.g. y=1.0\)"),
    ("foo(x)", "unknown function 'foo'"),
    ("open('/etc/passwd')", "unknown function 'open'"),
    ("eval('1')", "unknown function 'eval'"),
    ("getattr(x, 'real')", "unknown function 'getattr'"),
    ("__import__('os')", "unknown function '__import__'"),
    ("a*x", r"unknown name 'a' \(a parameter needs a value"),
    ("x^2", r"operator '\^' \(use \*\* for powers\) is not allowed"),
    ("x // 2", "operator '//' is not allowed"),
    ("x % 2", "operator '%' is not allowed"),
    ("x @ x", "operator '@' is not allowed"),
    ("~x", "unary operator Invert is not allowed"),
    ("not x", "unary operator Not is not allowed"),
    ("max(x, y=0)", r"keyword arguments are not allowed in max\(\)"),
    ("exp(*[x])", "Starred not allowed"),
    ("x if x > 0 else 0", r"conditional expressions \(use where\(cond, a, b\)\) not allowed"),
    ("x and 1", "and/or not allowed"),
    ("(y := 1)", "assignment not allowed"),
    ("(x, x)", "Tuple not allowed"),
    ("x > 0", r"comparisons are only allowed as the first argument of where\(\)"),
    ("where(x == 0, 1, x)", "only < <= > >= are allowed in a condition"),
    ("where(1, x, 0)", "cond must be one comparison such as x > 0"),
    ("1/0", "division by zero"),
    ("x**65", r"exponent 65 is too large \(\|exponent\| ≤ 64\)"),
    ("2**2**2**2**2**2*x", "exponent 65536 is too large"),
    ("1e999*x", "non-finite number"),
    ("True*x", "literal True is not allowed"),
    ("None", "literal None is not allowed"),
    ("1j*x", "literal 1j is not allowed"),
    ("", "empty formula"),
    ("   ", "empty formula"),
    ("x +", "cannot parse formula 'x \\+': invalid syntax"),
    ("x; y", "cannot parse formula"),
    ("exp", r"function 'exp' must be called, e.g. exp\(x\)"),
    ("exp(x, 2)", r"exp\(\) takes 1 argument, got 2"),
    ("atan2(x)", r"atan2\(\) takes 2 arguments, got 1"),
    ("max(x)", r"max\(\) takes two or more arguments"),
    ("He(2.5, x)", r"He\(n, x\) needs a non-negative integer degree n, got 5/2"),
    ("He(300, x)", r"He\(n, x\): degree 300 is too large"),
    ("factorial(x)", r"factorial\(n\) needs a non-negative integer constant n, got x"),
    ("factorial(-1)", r"factorial\(n\) needs a non-negative integer constant n, got -1"),
    ("factorial(201)", r"factorial\(n\): n = 201 is too large"),
    ("log(0)", "is infinite or undefined"),
    ("x+" * (MAX_LENGTH // 2 + 1) + "x", rf"formula is too long \(\d+ characters, at most {MAX_LENGTH}\)"),
    ("-(" * 50 + "x" + ")" * 50, rf"formula nested too deeply \(more than {MAX_DEPTH} levels\)"),
    ("sin(" * 45 + "x" + ")" * 45, rf"formula nested too deeply \(more than {MAX_DEPTH} levels\)"),
    ("-" * 1500 + "x", "formula nested too deeply"),
    ("(" * 300 + "x" + ")" * 300, "cannot parse formula"),
    ("max(" + ",".join(["x"] * 700) + ")", rf"formula too large \(more than {MAX_NODES} syntax nodes\)"),
]


@pytest.mark.parametrize("text, message", REFUSED, ids=[f"refused{i}" for i in range(len(REFUSED))])
def test_refused(text, message):
    with pytest.raises(FormulaError, match=message):
        parse_formula(text)


@pytest.mark.parametrize("text, message", [
    ("x.__class__", "attribute access not allowed"),
    ("open('/etc/passwd')", "unknown function 'open'"),
    ("a*sin(x)", "unknown name 'a'"),
    ("x^2", "operator '\\^'"),
])
def test_refused_through_activation(text, message):
    with pytest.raises(FormulaError, match=message):
        dc.activation(text)


def test_non_string_formula():
    with pytest.raises(FormulaError, match="a formula must be a string, got int"):
        parse_formula(3)
    with pytest.raises(FormulaError, match="an activation is a name or a formula string, got float"):
        dc.activation(1.5)


def test_formula_without_x():
    with pytest.raises(FormulaError, match="does not depend on x"):
        dc.activation("1 + 2")


# ---------------------------------------------------------------------------
# Injection attempts: nothing may run.
# ---------------------------------------------------------------------------

def _injections(marker):
    m = str(marker)
    return [
        f"__import__('os').system('touch {m}')",
        f"open('{m}', 'w')",
        f"open('{m}', 'w').write('x')",
        f"exec(\"open('{m}', 'w')\")",
        f"eval(\"__import__('os').system('touch {m}')\")",
        f"[c for c in ().__class__.__base__.__subclasses__()]",
        f"x + __import__('os').system('touch {m}')",
        f"where(x > 0, __import__('os').system('touch {m}'), x)",
        f"sin(x)[__import__('os').system('touch {m}')]",
        f"lambda: __import__('os').system('touch {m}')",
    ]


def test_injection_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    for text in _injections(marker):
        with pytest.raises(FormulaError):
            parse_formula(text)
        with pytest.raises(FormulaError):
            dc.activation(text)
        with pytest.raises(FormulaError):
            dc.register("evil", text)
        assert not marker.exists(), text
    assert REGISTRY.lookup("evil") is None
    with pytest.raises(FormulaError, match="only plain function calls"):
        parse_formula("__import__('os').system('touch /tmp/pwned_dualcalc_test')")
    with pytest.raises(FormulaError, match="unknown function 'open'"):
        parse_formula("open('/etc/passwd')")


def test_injection_through_catalog_entry_is_data_only(tmp_path):
    """A catalog file is data: a malicious formula is stored as text and refused when used."""
    marker = tmp_path / "pwned_catalog"
    text = (f'name = "evil_entry"\nformula = "__import__(\'os\').system(\'touch {marker}\')"\n'
            f'[dual]\nnngp = "open(\'{marker}\', \'w\')"\n')
    entry = parse_entry(text)
    REGISTRY.add(entry)
    try:
        with pytest.raises(FormulaError, match="only plain function calls"):
            dc.activation("evil_entry")
    finally:
        REGISTRY.remove("evil_entry")
    assert not marker.exists()


# ---------------------------------------------------------------------------
# Parameters.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("params, exc, message", [
    ({"a": float("nan")}, ParameterError, "parameter 'a' must be finite, got nan"),
    ({"a": float("inf")}, ParameterError, "parameter 'a' must be finite, got inf"),
    ({"a": True}, ParameterError, "parameter 'a' must be a real number, got bool"),
    ({"a": "1.0"}, ParameterError, "parameter 'a' must be a real number, got str"),
    ({"a": 1 + 2j}, ParameterError, "parameter 'a' must be a real number, got complex"),
    ({"c": 1.0}, ParameterError, "parameter name 'c' is reserved"),
    ({"x": 1.0}, ParameterError, "parameter name 'x' is reserved"),
    ({"pi": 3.0}, ParameterError, "parameter name 'pi' is reserved"),
    ({"rho": 0.5}, ParameterError, "parameter name 'rho' is reserved"),
    ({"exp": 1.0}, ParameterError, "parameter name 'exp' is reserved"),
    ({"_a": 1.0}, ParameterError, "invalid parameter name '_a'"),
    ({"a b": 1.0}, ParameterError, "invalid parameter name 'a b'"),
])
def test_parameter_errors(params, exc, message):
    with pytest.raises(exc, match=message):
        parse_formula("a*x", params)


def test_unused_parameter():
    with pytest.raises(ParameterError, match=r"parameter\(s\) b not used by formula 'a\*x'"):
        parse_formula("a*x", {"a": 1.0, "b": 2.0}, require_all_params=True)
    with pytest.raises(ParameterError, match="not used by formula"):
        dc.activation("sin(x)", a=1.0)


@pytest.mark.parametrize("name, params, exc, message", [
    ("leaky_relu", {"beta": 0.1}, ParameterError, r"activation 'leaky_relu' has no parameter\(s\) beta; its parameters: alpha=0.01"),
    ("relu", {"alpha": 0.1}, ParameterError, r"activation 'relu' has no parameter\(s\) alpha; its parameters: none"),
    ("leaky_relu", {"alpha": float("nan")}, ParameterError, "parameter 'alpha' must be finite"),
    ("sin", {"b": float("inf")}, ParameterError, "parameter 'b' must be finite"),
    ("erf", {"a": "2"}, ParameterError, "parameter 'a' must be a real number"),
    ("rectified_monomial", {"n": 1.5}, ParameterError, "must be a non-negative integer, got 1.5"),
    ("rectified_monomial", {"n": -1}, ParameterError, "must be a non-negative integer, got -1"),
    ("polynomial", {"coefficients": []}, ParameterError, "must be a non-empty list of numbers"),
    ("polynomial", {"coefficients": 3.0}, ParameterError, "must be a non-empty list of numbers"),
    ("polynomial", {"coefficients": [1.0, float("nan")]}, ParameterError, "must hold finite numbers"),
    ("hermite", {"n": 2.5}, FormulaError, r"He\(n, x\) needs a non-negative integer degree"),
])
def test_catalog_parameter_errors(name, params, exc, message):
    with pytest.raises(exc, match=message):
        dc.activation(name, **params)


@pytest.mark.parametrize("text, params, message", [
    ("x*c", {"c": 1.0}, "parameter name 'c' is reserved"),
    ("a*sin(x)", {"a": float("nan")}, "parameter 'a' must be finite"),
    ("q1*x", {"q1": 1.0}, "parameter name 'q1' is reserved"),
])
def test_formula_parameter_errors_through_activation(text, params, message):
    with pytest.raises(ParameterError, match=message):
        dc.activation(text, **params)


def test_unknown_activation():
    with pytest.raises(UnknownActivationError, match="unknown activation 'relux'.*Did you mean relu"):
        dc.activation("relux")
    with pytest.raises(UnknownActivationError, match="Known names: .*gelu"):
        dc.activation("no_such_activation")
    # a KeyError subclass with a readable message
    with pytest.raises(KeyError):
        dc.activation("no_such_activation")


def test_register_validates_first():
    with pytest.raises(FormulaError, match="unknown name 'b'"):
        dc.register("half_baked", "a*sin(b*x)", a=1.0)
    assert REGISTRY.lookup("half_baked") is None
    with pytest.raises(ParameterError, match="an activation name must be an identifier"):
        dc.register("not a name", "x")


# ---------------------------------------------------------------------------
# Catalog files.
# ---------------------------------------------------------------------------

GOOD = 'name = "thing"\nformula = "a*x"\n[parameters]\na = 1.0\n'


def test_parse_entry_good():
    entry = parse_entry(GOOD + '[dual]\nnngp = "a**2*c"\n')
    assert entry.name == "thing" and entry.parameters == {"a": 1.0} and entry.closed_form
    assert parse_entry(GOOD + "[dual]\nclosed_form = false\n").closed_form is False


@pytest.mark.parametrize("text, message", [
    ('name = "thing\nformula = "x"\n', "invalid TOML"),
    ('name = "thing"\nformula = "x"\nformula = "y"\n', "invalid TOML"),
    ('colour = "red"\n' + GOOD, r"unknown key\(s\) \['colour'\]"),
    ('name = "thing"\nformula = "x"\ncolour = 1\n', r"unknown key\(s\) \['colour'\]"),
    (GOOD + '[dual]\nnngp = "c"\nkernel = "c"\n', r"unknown \[dual\] key\(s\) \['kernel'\]"),
    (GOOD + '[dual]\nrule = "magic"\n', "unknown rule 'magic'; known: \\['piecewise', 'polynomial', 'rectified_monomial'\\]"),
    ('name = "thing"\n', "'formula' must be a non-empty string"),
    ('formula = "x"\n', "'name' must be a non-empty string"),
    ('name = "thing"\nformula = "  "\n', "'formula' must be a non-empty string"),
    ('name = "1thing"\nformula = "x"\n', "name '1thing' must be letters, digits and '_' starting with a letter"),
    ('name = "thi-ng"\nformula = "x"\n', "must be letters, digits and '_'"),
    ('name = "thing"\nformula = "x"\n[parameters]\na = "one"\n', "parameter 'a' must be a number"),
    ('name = "thing"\nformula = "x"\n[parameters]\na = true\n', "parameter 'a' must be a number"),
    ('name = "thing"\nformula = "x"\nparameters = 3\n', r"\[parameters\] must be a table"),
    ('name = "thing"\nformula = "x"\ndual = 3\n', r"\[dual\] must be a table"),
    (GOOD + '[dual]\nclosed_form = false\nnngp = "c"\n', "closed_form = false contradicts nngp/rule"),
    (GOOD + '[dual]\nntk = "1"\n', r"\[dual\] has ntk but no nngp"),
    (GOOD + '[dual]\nnngp = "c"\nntk_convention = "whatever"\n', "ntk_convention must be one of"),
    (GOOD + '[dual]\nnngp = 3\n', r"\[dual\] nngp must be a formula string"),
    ('name = "thing"\nformula = "x"\nbuilder = "spline"\n', "unknown builder 'spline'"),
    ('name = "thing"\nformula = "x"\nhomogeneous_degree = "one"\n', "homogeneous_degree must be a number"),
])
def test_parse_entry_errors(text, message):
    with pytest.raises(CatalogError, match=message):
        parse_entry(text, source="bad.toml")


def test_catalog_error_names_the_file():
    with pytest.raises(CatalogError, match="^bad.toml: invalid TOML"):
        parse_entry("name = ", source="bad.toml")


def test_entry_with_bad_dual_formula_fails_on_use():
    entry = parse_entry('name = "bad_dual"\nformula = "a*x"\n[parameters]\na = 1.0\n[dual]\nnngp = "a*c^2"\n')
    REGISTRY.add(entry)
    try:
        act = dc.activation("bad_dual")
        with pytest.raises(FormulaError, match="operator '\\^'"):
            act.dual
    finally:
        REGISTRY.remove("bad_dual")
