r"""Activations: a SymPy expression in x, its parameters, and its dual.

>>> import dualcalc as dc
>>> act = dc.activation("gelu")
>>> act.dual.method
'closed-form'
>>> float(act.nngp(1.0, 1.0, 0.5))  # E[σ(u)σ(v)], (u, v) ~ N(0, [[1, .5], [.5, 1]])
0.2...
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any

import numpy as np
import scipy.optimize
import scipy.special
import sympy as sp

from . import hermite as H
from .catalog import REGISTRY, CatalogEntry, parse_entry
from .derive import Derived, rectified_monomial_dual
from .derive.engine import DEFAULT_TIMEOUT, derivative_ae, derive
from .derive.piecewise_exp import switch_arguments
from .dual import CLOSED_FORM, DEFAULT_Q_RANGE, DEFAULT_TOL, HERMITE, Dual, HermiteSeries
from .errors import DivergentError, FormulaError, ParameterError
from .formula import DUAL_VARIABLES, exact_number, parse_formula
from .symbols import c, x
from .warn import warn

_NUMPY_MODULES = [{"erf": scipy.special.erf, "erfc": scipy.special.erfc}, "numpy"]


def numpy_function(expr: sp.Expr) -> Callable[[np.ndarray], np.ndarray]:
    """σ as a vectorised float64 NumPy function (from a SymPy tree, never from user text)."""
    f = sp.lambdify([x], expr, modules=_NUMPY_MODULES)

    def sigma(t):
        t = np.asarray(t, dtype=np.float64)
        with np.errstate(all="ignore"):
            return np.broadcast_to(np.asarray(f(t), dtype=np.float64), t.shape)

    return sigma


def find_kinks(expr: sp.Expr) -> tuple[float, ...]:
    """The real x where σ is not smooth: zeros of the arguments of abs, sign, step,
    max, min, and of the conditions of piecewise forms (found numerically, refined by
    Brent's method on [−60, 60])."""
    args = [a for node in sp.preorder_traversal(expr)
            if isinstance(node, sp.Abs | sp.sign | sp.Heaviside | sp.Max | sp.Min | sp.Piecewise)
            for a in switch_arguments(node)]
    roots: set[float] = set()
    grid = np.linspace(-60.0, 60.0, 24001)
    for a in args:
        if not a.has(x):
            continue
        g = numpy_function(a)
        v = g(grid)
        exact = grid[v == 0.0]
        roots.update(float(r) for r in exact)
        s = np.sign(v)
        for i in np.flatnonzero((s[:-1] * s[1:]) < 0):
            if np.isfinite(v[i]) and np.isfinite(v[i + 1]):
                roots.add(round(float(scipy.optimize.brentq(lambda t: float(g(np.array(t))), grid[i], grid[i + 1],
                                                             xtol=1e-15)), 14))
    return tuple(sorted(roots))


def _has_delta_derivative(expr: sp.Expr, kinks: tuple[float, ...] = ()) -> bool:
    """True when σ jumps (sign, step, or a discontinuous piecewise form): σ' holds a delta."""
    d = sp.diff(expr, x)
    if d.has(sp.DiracDelta):
        return True
    if not kinks:
        return False
    f = numpy_function(expr)
    for k in kinks:
        h = 1e-7 * max(1.0, abs(k))
        lo, hi, mid = (float(v) for v in f(np.array([k - h, k + h, k])))
        if np.isfinite(lo) and np.isfinite(hi) and abs(hi - lo) > 1e-4 * (1.0 + abs(mid) + abs(lo)):
            return True
    return False


class Activation:
    """An activation function σ(x) as a layer and as the source of a dual.

    Use :func:`activation` to make one.  ``expr`` is the SymPy expression in ``x``
    with the parameter values substituted; ``params`` the values; ``dual`` the
    :class:`~dualcalc.dual.Dual` (closed form when one is known, Hermite otherwise).

    Options (see :meth:`with_options`): ``tol`` and ``q_range`` — the relative accuracy
    the Hermite method must reach and the variances over which it states it;
    ``timeout`` — seconds allowed to the symbolic derivation before falling back to
    Hermite; ``use_cache`` — whether derived duals are read from / written to the
    on-disk cache.
    """

    def __init__(self, expr: sp.Expr, *, name: str | None = None, formula: str | None = None,
                 params: Mapping[str, Any] | None = None, entry: CatalogEntry | None = None,
                 tol: float = DEFAULT_TOL, q_range: tuple[float, float] = DEFAULT_Q_RANGE,
                 timeout: float | None = DEFAULT_TIMEOUT, use_cache: bool = True):
        self.expr = expr
        self.name = name
        self.formula = formula if formula is not None else str(expr)
        self.params = dict(params or {})
        self.entry = entry
        self.tol = tol
        self.q_range = (float(q_range[0]), float(q_range[1]))
        self.timeout = timeout
        self.use_cache = use_cache

    def with_options(self, *, tol: float | None = None, q_range: tuple[float, float] | None = None,
                     timeout: float | None = None, use_cache: bool | None = None) -> Activation:
        """A copy with other derivation options (the dual is derived afresh).

        >>> act = dc.activation("tanh").with_options(tol=1e-10, q_range=(0.1, 10.0))
        >>> act = dc.activation("x*exp(-x**2)*sin(3*x)").with_options(timeout=30)
        """
        tol = self.tol if tol is None else float(tol)
        if not (0 < tol < 1):
            raise ParameterError(f"tol must be in (0, 1), got {tol!r}")
        q_range = self.q_range if q_range is None else tuple(q_range)
        if len(q_range) != 2 or not (0 < float(q_range[0]) < float(q_range[1]) < np.inf):
            raise ParameterError(f"q_range must be (q_min, q_max) with 0 < q_min < q_max < inf, got {q_range!r}")
        timeout = self.timeout if timeout is None else timeout
        if timeout is not None and not (timeout > 0):
            raise ParameterError(f"timeout must be a positive number of seconds, got {timeout!r}")
        return Activation(self.expr, name=self.name, formula=self.formula, params=self.params,
                          entry=self.entry, tol=tol, q_range=q_range, timeout=timeout,
                          use_cache=self.use_cache if use_cache is None else bool(use_cache))

    def __repr__(self) -> str:
        label = self.name or self.formula
        p = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"Activation({label!r}{', ' + p if p else ''})"

    @property
    def label(self) -> str:
        return self.name or self.formula

    # -- numerics of σ itself -------------------------------------------------
    @cached_property
    def function(self) -> Callable[[np.ndarray], np.ndarray]:
        """σ as a NumPy function."""
        return numpy_function(self.expr)

    def __call__(self, t):
        return self.function(t)

    @cached_property
    def kinks(self) -> tuple[float, ...]:
        return find_kinks(self.expr)

    # -- the dual ---------------------------------------------------------------
    @cached_property
    def derivative_function(self) -> Callable[[np.ndarray], np.ndarray]:
        """σ' (almost everywhere: deltas dropped) as a NumPy function."""
        return numpy_function(derivative_ae(self.expr))

    @cached_property
    def dual(self) -> Dual:
        derived = self._closed_form()
        if derived is not None:
            dual = Dual(method=CLOSED_FORM, rule=derived.rule, nngp_rho=derived.nngp,
                        ntk_rho=derived.ntk, ntk_convention=derived.ntk_convention,
                        domain=tuple(derived.domain), q_max=derived.q_max, detail=derived.detail,
                        q_range=self.q_range)
            self._check_unit_variance(dual)
            return dual
        jumps = _has_delta_derivative(self.expr, self.kinks)
        series = HermiteSeries(self.function, self.kinks, tol=self.tol, df=self.derivative_function,
                               jumps=jumps)
        # Fail early (and specifically) for activations whose square is not integrable.
        series.table(np.array([1.0]), degree=4)
        conv = "zero-a.e." if jumps else "price"
        return Dual(method=HERMITE, rule="hermite-quadrature", series=series, ntk_convention=conv,
                    q_range=self.q_range)

    def _check_unit_variance(self, dual: Dual) -> None:
        """Refuse parameters whose dual overflows float64 already at q1 = q2 = c = 1 (e.g.
        ``leaky_relu(alpha=1e200)``: α² is beyond 1e308), instead of an OverflowError or inf
        deep inside a kernel later."""
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                vals = [dual.evaluate(w, 1.0, 1.0, 1.0) for w in ("nngp", "ntk")]
        except (OverflowError, FloatingPointError) as err:
            raise ParameterError(f"{self.label}: its dual overflows float64 at unit variance ({err}); "
                                 f"parameters {self.params} are too large — rescale them") from None
        if any(np.isinf(v).any() for v in vals):
            raise ParameterError(f"{self.label}: its dual is infinite at unit variance (k(1, 1, 1) beyond "
                                 f"float64); parameters {self.params} are too large — rescale them")

    def _closed_form(self) -> Derived | None:
        e = self.entry
        if e is not None and e.nngp is not None:
            values = {k: v for k, v in self.params.items() if not isinstance(v, list)}
            k = parse_formula(e.nngp, values, variables=DUAL_VARIABLES)
            t = (parse_formula(e.ntk, values, variables=DUAL_VARIABLES) if e.ntk is not None
                 else sp.diff(k, c) if e.ntk_convention == "price" else sp.S.Zero)
            return Derived(nngp=k, ntk=t, rule=f"catalog:{e.name}", ntk_convention=e.ntk_convention)
        if e is not None and e.rule == "rectified_monomial":
            # the piecewise-polynomial rule derives these (fast, disk-cached); J_n as a fallback
            d = derive(self.expr, timeout=self.timeout, use_cache=self.use_cache)
            return d if d is not None else rectified_monomial_dual(int(self.params["n"]))
        # catalog rule "polynomial", and any formula: recognition, then the symbolic rules
        return derive(self.expr, timeout=self.timeout, use_cache=self.use_cache)

    def nngp(self, q1, q2, c):
        """k(q1, q2, c) = E[σ(u)σ(v)], (u, v) ~ N(0, [[q1, c], [c, q2]]); vectorised, float64."""
        return self.dual.evaluate("nngp", q1, q2, c)

    def ntk(self, q1, q2, c):
        """k̇(q1, q2, c) = E[σ'(u)σ'(v)] (= ∂k/∂c by Price's theorem); vectorised, float64.

        Where σ' holds a delta (σ jumps: sign, step) the delta is dropped — σ' is the
        almost-everywhere derivative, 0 for sign and step, the convention of
        neural-tangents and of gradient descent on a finite network — and a warning says
        so.  :meth:`price_ntk` gives ∂k/∂c instead.
        """
        if self.dual.ntk_convention == "zero-a.e.":
            warn(f"{self.label}: σ' holds a delta (σ jumps), so the derivative dual k̇ uses the almost-everywhere "
                 "derivative: the delta is dropped (0 for sign/step), as in neural-tangents and in gradient descent "
                 "on a finite network; use price_ntk() for dk/dc including the delta", RuntimeWarning,
                 key=("delta-derivative", self.label))
        return self.dual.evaluate("ntk", q1, q2, c)

    def price_ntk(self, q1, q2, c):
        """∂k/∂c (Price's theorem).  Equal to :meth:`ntk` for continuous σ; when σ jumps it
        includes the delta's contribution and is infinite on the diagonal ρ = ±1.  For the
        Hermite method it is the (truncated) Mehler series Σ l r_l r_l ρ^{l−1}/√(q1 q2)."""
        return self.dual.evaluate("price", q1, q2, c)

    def hermite(self, degree: int, q=1.0) -> np.ndarray:
        """Normalised Hermite coefficients r_l(q) = E[σ(√q g) h_l(g)], l = 0..degree.

        ``h_l = He_l/√(l!)``.  A scalar ``q`` gives shape (degree+1,), an array (len(q), degree+1).
        """
        if int(degree) != degree or degree < 0:
            raise ValueError(f"degree must be a non-negative integer, got {degree!r}")
        R, _ = H.coefficient_table(self.function, int(degree), q, self.kinks)
        return R[0] if np.ndim(q) == 0 else R

    def taylor(self, degree: int) -> np.ndarray:
        """Taylor coefficients of the unit-variance dual k(1, 1, ρ) = Σ_l r_l(1)² ρ^l."""
        return self.hermite(degree, 1.0) ** 2

    def to_stax(self, q_range: tuple[float, float] | None = None):
        """A neural-tangents layer ``stax.Elementwise(fn, nngp_fn, d_nngp_fn)`` whose functions are
        this dual printed as JAX code (Hermite duals: their series on a coefficient table over
        ``q_range``, default the activation's; NaN outside).  Needs jax and neural-tangents
        (:class:`~dualcalc.errors.BackendError` otherwise); see docs/predict.md."""
        from .jax_source import activation_to_stax

        return activation_to_stax(self, q_range)

    def __getstate__(self):
        """Pickle (Dask workers, multiprocessing) without the lambdified σ, which does not
        pickle; a Hermite dual holds σ too and is re-derived where it is next used."""
        state = self.__dict__.copy()
        state.pop("function", None)
        state.pop("derivative_function", None)
        if getattr(state.get("dual"), "series", None) is not None:
            del state["dual"]
        return state

    def plot(self, **kwargs):
        """σ, k(ρ) and k̇(ρ) at a few variances and the Hermite decay: a matplotlib Figure
        (see :func:`dualcalc.plotting.plot_activation` for the options)."""
        from .plotting import plot_activation

        return plot_activation(self, **kwargs)


def _entry_params(entry: CatalogEntry, given: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(given) - set(entry.parameters)
    if unknown:
        allowed = ", ".join(f"{k}={v!r}" for k, v in entry.parameters.items()) or "none"
        raise ParameterError(f"activation {entry.name!r} has no parameter(s) {', '.join(sorted(unknown))}; "
                             f"its parameters: {allowed}")
    values = dict(entry.parameters)
    values.update(given)
    for k, v in values.items():
        if isinstance(entry.parameters[k], list):
            if not isinstance(v, list | tuple | np.ndarray) or len(v) == 0:
                raise ParameterError(f"parameter {k!r} of {entry.name!r} must be a non-empty list of numbers")
            values[k] = [float(e) for e in v]
            if not all(np.isfinite(values[k])):
                raise ParameterError(f"parameter {k!r} must hold finite numbers")
        elif isinstance(entry.parameters[k], int) and entry.rule in ("rectified_monomial",) and k == "n":
            if int(v) != v or v < 0:
                raise ParameterError(f"parameter n of {entry.name!r} must be a non-negative integer, got {v!r}")
            values[k] = int(v)
    return values


def _entry_expr(entry: CatalogEntry, values: Mapping[str, Any]) -> sp.Expr:
    if entry.builder == "polynomial":
        coeffs = values["coefficients"]
        return sum((exact_number(m) * x**j for j, m in enumerate(coeffs)), sp.S.Zero)
    scalars = {k: v for k, v in values.items() if not isinstance(v, list)}
    return parse_formula(entry.formula, scalars)


def activation(name_or_formula: str | Activation, /, **params: Any) -> Activation:
    """An activation from a catalog name or a formula in ``x``.

    >>> activation("leaky_relu", alpha=0.1)     # catalog entry with a parameter
    >>> activation("x*erf(x)")                  # any formula in x
    >>> activation("a*sin(b*x)", a=2.0, b=0.5)  # a formula with parameters

    Names are looked up in this process's registrations, the user catalog and the
    built-in catalog (case-insensitive, aliases too); any other text is parsed as a
    formula by the safe parser.
    """
    if isinstance(name_or_formula, Activation):
        if params:
            raise ParameterError("parameters cannot be given with an existing Activation")
        return name_or_formula
    if not isinstance(name_or_formula, str):
        raise FormulaError(f"an activation is a name or a formula string, got {type(name_or_formula).__name__}")
    text = name_or_formula.strip()
    entry = REGISTRY.lookup(text) if text.isidentifier() else None
    if entry is not None:
        values = _entry_params(entry, params)
        expr = _entry_expr(entry, values)
        return Activation(expr, name=entry.name, formula=entry.formula, params=values, entry=entry)
    if text.isidentifier() and text != "x":
        raise REGISTRY.unknown(text)
    expr = parse_formula(text, params, require_all_params=True)
    if not expr.has(x):
        raise FormulaError(f"formula {text!r} does not depend on x")
    return Activation(expr, formula=text, params=dict(params))


def register(name: str, formula: str, /, **defaults: Any) -> Activation:
    """Register a named activation for this process: ``register("swish", "x/(1+exp(-x))")``.

    The formula is validated by the safe parser (with the defaults as parameter
    values) before anything is registered.  Returns the activation at its defaults.
    """
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        raise ParameterError(f"an activation name must be an identifier, got {name!r}")
    if name == "x":
        raise ParameterError("'x' cannot be an activation name")
    parse_formula(formula, defaults, require_all_params=True)  # validate first
    lines = [f'name = "{name}"', f"formula = {_toml_string(formula)}", "[parameters]"]
    lines += [f"{k} = {float(v)!r}" for k, v in defaults.items()]
    entry = parse_entry("\n".join(lines), source=f"register({name!r})")
    REGISTRY.add(entry)
    return activation(name)


def _toml_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

