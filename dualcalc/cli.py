r"""The ``dualcalc`` command line (also ``python -m dualcalc``).

    dualcalc --version
    dualcalc show NAME_OR_FORMULA [--param k=v ...] [--degree N] [--target numba|cuda] [--depth L]
    dualcalc show --net SPEC [--target numba|cuda]
    dualcalc register NAME "FORMULA" [--param k=v ...] [--description TEXT] [--force] [--no-check]
    dualcalc catalog list
    dualcalc catalog build [--out DIR] [--target numba|cuda|all] [--jobs N] [--only NAME ...]
                           [--no-user] [--force] [--no-plots] [--tol T]
    dualcalc kernel --data X.npy [--data2 Y.npy] --net SPEC --out K.npz
                    [--get nngp,ntk] [--backend auto|numpy|numba|cuda] [--dtype float64|float32]

Network SPEC (``dualcalc kernel --net``)
----------------------------------------
A network is written as layers joined by ``-``::

    dense(1.5,0.1)-relu-dense(1.5,0.1)-gelu-dense(1.5,0.1)

* ``dense``, ``dense(W)``, ``dense(W,b)`` or ``dense(W=1.5,b=0.1)``: a fully
  connected layer ``Dense(W_std=W, b_std=b)`` (defaults W = 1, b = 0, NTK
  parameterization).
* an activation: a catalog or registered name (``relu``, ``gelu``, ``tanh``),
  with parameters ``leaky_relu(alpha=0.1)``, or a formula in braces
  ``{x*erf(x)}`` / ``{a*sin(b*x)}(a=2,b=0.5)`` (parsed by the safe formula
  parser, never evaluated as Python).

* branches, as neural-tangents' stax: ``fanout(N)``, ``parallel(SPEC, SPEC, ...)``,
  ``faninsum``, ``faninprod``, ``faninconcat``, ``identity``, ``layernorm`` /
  ``layernorm(eps=1e-6)`` and ``repeat(SPEC, N)``; a residual network::

    dense(1.5,0.1)-repeat(fanout(2)-parallel(relu-dense(1.5,0.1)-relu-dense(1.5,0.1), identity)-faninsum, 2)-relu-dense

The compact form ``ACT*L[:W=w][:b=b]`` means L hidden layers of ``dense(w,b)``
followed by ACT, then a readout ``dense(w,b)``: ``relu*3:W=1.5:b=0.1`` is
``dense(1.5,0.1)-relu-dense(1.5,0.1)-relu-dense(1.5,0.1)-relu-dense(1.5,0.1)``.

Input files are NumPy ``.npy`` arrays of shape (n, d) (loaded with
``allow_pickle=False``); the output ``.npz`` holds ``nngp`` and/or ``ntk`` (n1, n2)
arrays and the ``spec`` text, written atomically.
"""
from __future__ import annotations

import argparse
import io
import math
import re
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import sympy as sp

from ._version import __version__
from .errors import BackendError, DualcalcError, InputError, ParameterError


def _params(items: Sequence[str] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items or ():
        if "=" not in item:
            raise SystemExit(f"dualcalc: --param expects NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise SystemExit(f"dualcalc: --param {k}: {v!r} is not a number") from None
    return out


def _fmt(values: np.ndarray) -> str:
    return "  ".join(f"{v: .6e}" for v in values)


# ---------------------------------------------------------------------------------------------
# network SPEC (see the module docstring)
# ---------------------------------------------------------------------------------------------
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_CLOSE = {"(": ")", "{": "}"}


def _split_top(text: str, sep: str) -> list[str]:
    """Split ``text`` at ``sep`` outside (), {}; refuse unbalanced brackets."""
    parts, depth, stack, cur = [], 0, [], []
    for ch in text:
        if ch in _CLOSE:
            stack.append(_CLOSE[ch])
        elif ch in (")", "}"):
            if not stack or stack.pop() != ch:
                raise ParameterError(f"--net: unbalanced {ch!r} in {text!r}")
        if ch == sep and not stack:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if stack:
        raise ParameterError(f"--net: missing {stack[-1]!r} in {text!r}")
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def _number(text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ParameterError(f"--net: {what}: {text.strip()!r} is not a number") from None
    if not math.isfinite(v):
        raise ParameterError(f"--net: {what} must be finite, got {text.strip()!r}")
    return v


def _call(token: str) -> tuple[str, str | None]:
    """``head(args)`` → (head, args); ``head`` → (head, None)."""
    if token.endswith(")"):
        i = _matching_open(token)
        return token[:i].strip(), token[i + 1:-1]
    return token, None


def _matching_open(token: str) -> int:
    depth = 0
    for i in range(len(token) - 1, -1, -1):
        if token[i] == ")":
            depth += 1
        elif token[i] == "(":
            depth -= 1
            if depth == 0:
                return i
    raise ParameterError(f"--net: unbalanced parentheses in {token!r}")


def _kwargs(args: str, where: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in _split_top(args, ","):
        if "=" not in item:
            raise ParameterError(f"--net: {where}: expected NAME=VALUE, got {item!r}")
        k, v = (t.strip() for t in item.split("=", 1))
        if not _NAME.match(k):
            raise ParameterError(f"--net: {where}: bad parameter name {k!r}")
        if k in out:
            raise ParameterError(f"--net: {where}: parameter {k!r} given twice")
        out[k] = _number(v, f"{where} {k}")
    return out


def _dense(args: str | None):
    from .network import Dense

    if args is None or not args.strip():
        return Dense()
    items = _split_top(args, ",")
    if len(items) > 2:
        raise ParameterError(f"--net: dense takes at most two values (W, b), got {args!r}")
    if all("=" in it for it in items):
        kw = _kwargs(args, "dense")
        bad = set(kw) - {"W", "b"}
        if bad:
            raise ParameterError(f"--net: dense accepts W= and b=, not {', '.join(sorted(bad))}")
        return Dense(W_std=kw.get("W", 1.0), b_std=kw.get("b", 0.0))
    if any("=" in it for it in items):
        raise ParameterError(f"--net: dense({args}): give W, b either both by position or both by name")
    vals = [_number(it, "dense") for it in items]
    return Dense(*vals)


def _act(token: str):
    from .activation import activation

    if not token:
        raise ParameterError("--net: empty layer (two '-' in a row, or a '-' at an end?)")
    if token.startswith("{"):
        end = _split_braces_end(token)
        formula = token[1:end]
        rest = token[end + 1:].strip()
        params = {}
        if rest:
            if not (rest.startswith("(") and rest.endswith(")")):
                raise ParameterError(f"--net: after {{formula}} only (name=value, ...) may follow, got {rest!r}")
            params = _kwargs(rest[1:-1], "formula")
        return activation(formula, **params)
    head, args = _call(token)
    if not _NAME.match(head):
        raise ParameterError(f"--net: {token!r} is neither dense(...) nor an activation name; "
                             "write formulas in braces, e.g. {x*erf(x)}")
    return activation(head, **(_kwargs(args, head) if args and args.strip() else {}))


def _split_braces_end(token: str) -> int:
    depth = 0
    for i, ch in enumerate(token):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
    raise ParameterError(f"--net: missing '}}' in {token!r}")


#: Layer names of the SPEC (before activation names: a registered activation of one of these
#: names is not reachable from a SPEC).
_NO_ARGS = {"faninsum": "FanInSum", "faninprod": "FanInProd", "faninconcat": "FanInConcat", "identity": "Identity"}


def _layer(token: str):
    from . import network as N

    head, args = _call(token)
    name = head.lower()
    if name == "dense":
        return _dense(args)
    if name in _NO_ARGS:
        if args is not None and args.strip():
            raise ParameterError(f"--net: {head} takes no arguments, got {token!r}")
        return getattr(N, _NO_ARGS[name])()
    if name == "fanout":
        return N.FanOut(_count(args, token))
    if name == "layernorm":
        kw = _kwargs(args, "layernorm") if args and args.strip() else {}
        if set(kw) - {"eps"}:
            raise ParameterError(f"--net: layernorm accepts eps=, not {', '.join(sorted(set(kw) - {'eps'}))}")
        return N.LayerNorm(eps=kw.get("eps", 1e-12))
    if name == "parallel":
        if args is None or not args.strip():
            raise ParameterError("--net: parallel needs its branches, e.g. parallel(relu-dense, identity)")
        return N.parallel(*(N.serial(*_sequence(a)) for a in _split_top(args, ",")))
    if name == "repeat":
        parts = _split_top(args or "", ",")
        if len(parts) != 2:
            raise ParameterError(f"--net: repeat takes a SPEC and a count, e.g. repeat(relu-dense, 3); got {token!r}")
        return N.repeat(N.serial(*_sequence(parts[0])), _count(parts[1], token))
    return _act(token)


def _count(text: str | None, token: str) -> int:
    try:
        n = int((text or "").strip())
    except ValueError:
        raise ParameterError(f"--net: {token!r} needs a whole number") from None
    if not 1 <= n <= 1000:
        raise ParameterError(f"--net: the count in {token!r} must be between 1 and 1000")
    return n


def _sequence(text: str) -> list:
    return [_layer(tok) for tok in _split_top(text, "-")]


def parse_net_spec(spec: str):
    """A :class:`~dualcalc.network.Network` from a SPEC string (syntax: module docstring).

    >>> parse_net_spec("dense(1.5,0.1)-relu-dense(1.5,0.1)")
    >>> parse_net_spec("relu*3:W=1.5:b=0.1")
    """
    from .network import Dense, serial

    if not isinstance(spec, str) or not spec.strip():
        raise ParameterError("--net: empty network SPEC")
    if len(spec) > 4000:
        raise ParameterError("--net: SPEC too long (at most 4000 characters)")
    spec = spec.strip()
    compact = _split_top(spec, ":")
    head = _split_top(compact[0], "*")
    if len(head) == 2:  # compact form ACT*L[:W=..][:b=..]
        act_text, depth_text = head
        try:
            depth = int(depth_text)
        except ValueError:
            raise ParameterError(f"--net: depth after '*' must be an integer, got {depth_text!r}") from None
        if not 1 <= depth <= 1000:
            raise ParameterError(f"--net: depth must be between 1 and 1000, got {depth}")
        opts = _kwargs(",".join(compact[1:]), "compact SPEC") if len(compact) > 1 else {}
        bad = set(opts) - {"W", "b"}
        if bad:
            raise ParameterError(f"--net: the compact form accepts :W= and :b=, not {', '.join(sorted(bad))}")
        act = _act(act_text)
        dense = Dense(W_std=opts.get("W", 1.0), b_std=opts.get("b", 0.0))
        layers: list = []
        for _ in range(depth):
            layers += [dense, act]
        return serial(*layers, dense)
    if len(head) > 2:
        raise ParameterError(f"--net: more than one '*' in {compact[0]!r}")
    if len(compact) > 1:
        raise ParameterError("--net: ':' options belong to the compact form ACT*L:W=..:b=..")
    net = serial(*_sequence(spec))
    net.program()  # lowered here, so that a network that cannot run is refused with the SPEC
    return net


def _backends_missing(exc: ImportError) -> bool:
    name = getattr(exc, "name", "") or ""
    return name == "dualcalc.backends" or name.startswith("codegen")


def _show(args) -> int:
    from .activation import activation

    if args.net is not None:
        return _show_net(args)
    if args.activation is None:
        raise ParameterError("show: give an activation (name or formula) or --net SPEC")
    act = activation(args.activation, **_params(args.param))
    if args.target:
        from .network import Dense, serial

        layers: list = [Dense(W_std=1.0, b_std=0.0)]
        for _ in range(args.depth):
            layers += [act, Dense(W_std=1.0, b_std=0.0)]
        return _print_source(serial(*layers), args.target)
    dual = act.dual
    print(f"activation : {act.label}")
    print(f"formula    : sigma(x) = {sp.sstr(act.expr)}")
    if act.params:
        print("parameters : " + ", ".join(f"{k} = {v}" for k, v in act.params.items()))
    print(f"method     : {dual.method} (rule: {dual.rule})")
    print("dual       : k(q1, q2, c) = E[sigma(u) sigma(v)],  (u, v) ~ N(0, [[q1, c], [c, q2]])")
    if dual.nngp is not None:
        print(textwrap.indent("k  = " + sp.sstr(dual.nngp), "  "))
        if dual.ntk_convention == "zero-a.e.":
            print("  k' = 0   (sigma' is a delta; sigma' = 0 almost everywhere, as in neural-tangents)")
        else:
            print(textwrap.indent("k' = " + sp.sstr(dual.ntk), "  "))
    else:
        print("  no closed form: k = sum_l r_l(q1) r_l(q2) rho^l  (norm-aware Hermite series)")
        print(f"  degree {dual.degree} meets relative error {dual.error_estimate:.1e} for q in "
              f"[{dual.q_range[0]}, {dual.q_range[1]}]")
    n = args.degree
    print(f"hermite    : r_l(1), l = 0..{n}")
    print(textwrap.indent(_fmt(act.hermite(n, 1.0)), "  "))
    print(f"taylor     : unit-variance dual k(1, 1, rho) = sum_l a_l rho^l, l = 0..{n}")
    print(textwrap.indent(_fmt(act.taylor(n)), "  "))
    print(f"check      : k(1, 1, 0.5) = {float(act.nngp(1.0, 1.0, 0.5)):.12g},  "
          f"k'(1, 1, 0.5) = {float(act.ntk(1.0, 1.0, 0.5)):.12g}")
    return 0


def _show_net(args) -> int:
    """``show --net SPEC``: the network's program, or with --target its generated source."""
    if args.activation is not None or args.param:
        raise ParameterError("show: --net takes the whole network; leave out the activation and --param")
    net = parse_net_spec(args.net)
    if _has_spatial(net):
        raise ParameterError("show --net: fully connected networks (the SPEC has no convolutions)")
    if not args.target:
        print(f"network : {net.program().description}")
        print(net.program().listing())
        return 0
    return _print_source(net, args.target)


def _print_source(net, target: str) -> int:
    try:
        print(net.source(target))
    except ImportError as exc:
        if not _backends_missing(exc):
            raise
        raise BackendError(f"code generation for {target} is not available in this build "
                           f"({exc.name} is missing)") from None
    return 0


def _has_spatial(net) -> bool:
    return any(getattr(l, "is_layer", False) is True for l in net.layers)


def _register(args) -> int:
    from .activation import _toml_string, activation
    from .catalog import builtin_entries, parse_entry, user_catalog_dir
    from .formula import parse_formula

    params = _params(args.param)
    parse_formula(args.formula, params, require_all_params=True)
    lines = [f'name = "{args.name}"', f"formula = {_toml_string(args.formula)}"]
    if args.description:
        lines.append(f"description = {_toml_string(args.description)}")
    lines.append("[parameters]")
    lines += [f"{k} = {v!r}" for k, v in params.items()]
    text = "\n".join(lines) + "\n"
    parse_entry(text, source=args.name)  # validate before writing
    if args.name in builtin_entries() and not args.force:
        raise SystemExit(f"dualcalc: {args.name!r} is a shipped catalog entry; a user entry would replace it "
                         "(pass --force to do so)")
    summary = ""
    if not args.no_check:  # the dual must exist: E[σ(u)²] finite, a closed form or a Hermite series
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            dual = activation(args.formula, **params).dual
            summary = f" ({dual.method}" + (f", degree {dual.degree})" if dual.degree else ")")
    folder = user_catalog_dir()
    path = folder / f"{args.name}.toml"
    if path.exists() and not args.force:
        raise SystemExit(f"dualcalc: {path} exists; pass --force to replace it")
    from .fileio import atomic_write_text

    atomic_write_text(path, text)
    print(f"registered {args.name!r}{summary} in {path}")
    return 0


def _catalog_list(args) -> int:
    from .catalog import REGISTRY

    for name, entry in sorted(REGISTRY.all().items()):
        kind = "closed form" if entry.closed_form else "hermite"
        print(f"{name:20s} {kind:12s} {entry.formula}")
    for fname, err in sorted(REGISTRY.user_entries()[1].items()):
        print(f"dualcalc: warning: user catalog file skipped: {err}", file=sys.stderr)
    return 0


def _catalog_build(args) -> int:
    from .build import build_catalog

    result = build_catalog(args.out, target=args.target, jobs=args.jobs, only=args.only,
                           include_user=not args.no_user, force=args.force, plots=not args.no_plots,
                           tol=args.tol, progress=None if not args.no_progress else False)
    return result.exit_code


def _load_npy(path_text: str, flag: str):
    path = Path(path_text)
    if path.suffix.lower() != ".npy":
        raise InputError(f"{flag} {path_text}: expected a .npy file (numpy.save), got {path.suffix or 'no suffix'!r}")
    if not path.is_file():
        raise InputError(f"{flag} {path_text}: no such file")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        raise InputError(f"{flag} {path_text}: not a plain numeric .npy array ({err})") from None
    except OSError as err:
        raise InputError(f"{flag} {path_text}: cannot read it ({err})") from None


def _kernel(args) -> int:
    from .fileio import atomic_write_bytes

    out = Path(args.out)
    if out.suffix.lower() != ".npz":
        raise InputError(f"--out {args.out}: the output is a .npz file; give a name ending in .npz")
    get = tuple(g.strip() for g in args.get.split(",") if g.strip())
    net = parse_net_spec(args.net)
    X = _load_npy(args.data, "--data")
    Y = _load_npy(args.data2, "--data2") if args.data2 else None
    backend = args.backend
    try:
        k = net.kernel(X, Y, get=get, backend=backend, dtype=np.dtype(args.dtype))
    except ImportError as exc:
        if not _backends_missing(exc):
            raise
        if backend != "auto":
            raise BackendError(f"backend {backend!r} is not available in this build ({exc.name} is missing); "
                               "use --backend numpy") from None
        print("dualcalc: note: generated backends not available; using the numpy backend", file=sys.stderr)
        backend = "numpy"
        k = net.kernel(X, Y, get=get, backend=backend, dtype=np.dtype(args.dtype))
    if backend == "auto":
        from .backends import resolve_backend

        backend = resolve_backend("auto")  # record what ran
    arrays = {name: getattr(k, name) for name in ("nngp", "ntk") if getattr(k, name) is not None}
    buf = io.BytesIO()
    np.savez(buf, **arrays, spec=np.array(args.net), backend=np.array(backend))
    atomic_write_bytes(out, buf.getvalue())
    shape = next(iter(arrays.values())).shape
    print(f"wrote {', '.join(arrays)} {shape[0]}x{shape[1]} ({backend}) to {out}")
    return 0


DEFAULT_BUILD_OUT = Path("build") / "catalog"
SPEC_HELP = """network SPEC: layers joined by '-':
  dense(1.5,0.1)-relu-dense(1.5,0.1)-gelu-dense(1.5,0.1)
  dense | dense(W) | dense(W,b) | dense(W=1.5,b=0.1)   fully connected layer (defaults W=1, b=0)
  relu | leaky_relu(alpha=0.1)                         catalog/registered activation [parameters]
  {x*erf(x)} | {a*sin(b*x)}(a=2,b=0.5)                 a formula in braces [parameters]
  fanout(2) | parallel(SPEC, SPEC) | faninsum | faninprod | faninconcat | identity
  layernorm | layernorm(eps=1e-6) | repeat(SPEC, N)    branches and LayerNorm (neural-tangents' stax)
  dense-repeat(fanout(2)-parallel(relu-dense, identity)-faninsum, 3)-relu-dense   a residual network
compact form ACT*L[:W=w][:b=b]: L x (dense(w,b), ACT), then dense(w,b):
  relu*3:W=1.5:b=0.1"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dualcalc", description="Symbolic dual-activation compiler: "
                                "exact and sketched NNGP/NTK kernels for any activation.")
    p.add_argument("--version", action="version", version=f"dualcalc {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("show", help="print an activation's dual, method and coefficients, or its generated code")
    s.add_argument("activation", nargs="?", help="catalog name or formula in x, e.g. gelu or 'x*erf(x)'")
    s.add_argument("--net", metavar="SPEC", help="a whole network (kernel --net syntax): print its program, "
                   "or with --target its generated source")
    s.add_argument("--param", "-p", action="append", metavar="NAME=VALUE", help="parameter value (repeatable)")
    s.add_argument("--degree", type=int, default=6, help="number of Hermite/Taylor coefficients shown - 1")
    s.add_argument("--target", choices=("numba", "cuda"), help="print the generated kernel source instead")
    s.add_argument("--depth", type=int, default=2, help="hidden layers of the network shown with --target")
    s.set_defaults(func=_show)
    r = sub.add_parser("register", help="add a named activation to the user catalog")
    r.add_argument("name")
    r.add_argument("formula")
    r.add_argument("--param", "-p", action="append", metavar="NAME=VALUE")
    r.add_argument("--description", default="")
    r.add_argument("--force", action="store_true", help="replace an existing user entry (or shadow a shipped one)")
    r.add_argument("--no-check", action="store_true", help="skip the check that the dual exists")
    r.set_defaults(func=_register)
    c = sub.add_parser("catalog", help="the activation catalog")
    csub = c.add_subparsers(dest="catalog_command", required=True)
    cl = csub.add_parser("list", help="list catalog entries")
    cl.set_defaults(func=_catalog_list)
    cb = csub.add_parser(
        "build", help="derive, verify, compile and plot every catalog entry; write a report",
        description="Derive every catalog entry (shipped and user catalog), verify its dual against the "
        "quadrature oracle, generate and compile its kernels, plot it, and write report.md, report.json "
        "and png/NAME.png into --out. Unchanged entries are served from the cache (manifest.json). "
        "Exit status 1 when any entry fails; the others are still built.")
    cb.add_argument("--out", default=str(DEFAULT_BUILD_OUT), metavar="DIR",
                    help=f"output folder (default {DEFAULT_BUILD_OUT})")
    cb.add_argument("--target", choices=("numba", "cuda", "all"), default="all",
                    help="kernels to generate and compile (cuda: PTX through NVRTC, no GPU needed); default all")
    cb.add_argument("--jobs", "-j", type=int, default=1, metavar="N", help="worker processes (default 1)")
    cb.add_argument("--only", nargs="+", metavar="NAME", help="build only these entries")
    cb.add_argument("--no-user", action="store_true", help="leave out the user catalog")
    cb.add_argument("--force", action="store_true", help="rebuild everything, ignoring the cache")
    cb.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    cb.add_argument("--no-progress", action="store_true", help="no progress bar")
    cb.add_argument("--tol", type=float, default=None,
                    help="verification tolerance floor (default 1e-7; Hermite duals: also 10x their stated error)")
    cb.set_defaults(func=_catalog_build)
    k = sub.add_parser(
        "kernel", help="NNGP/NTK kernels of a network between data files",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compute the exact NNGP/NTK of an infinite-width network between the rows of X "
        "(and Y) and save them to a .npz file (arrays nngp, ntk).\n\n" + SPEC_HELP)
    k.add_argument("--data", required=True, metavar="X.npy", help="inputs, a (n1, d) .npy array")
    k.add_argument("--data2", metavar="Y.npy", help="second inputs (n2, d); default: X itself")
    k.add_argument("--net", required=True, metavar="SPEC", help="the network, e.g. 'relu*3:W=1.5:b=0.1'")
    k.add_argument("--out", required=True, metavar="K.npz", help="output .npz file")
    k.add_argument("--get", default="nngp,ntk", help="nngp, ntk or nngp,ntk (default)")
    k.add_argument("--backend", default="auto", choices=("auto", "numpy", "numba", "cuda"),
                   help="auto: cuda with a GPU, else numba (numpy when the generated backends are absent)")
    k.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    k.set_defaults(func=_kernel)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DualcalcError as err:
        print(f"dualcalc: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `dualcalc show ... | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
