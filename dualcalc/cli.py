"""The ``dualcalc`` command line.

    dualcalc show NAME_OR_FORMULA [--param k=v ...] [--degree N] [--target numba|cuda] [--depth L]
    dualcalc register NAME "FORMULA" [--param k=v ...]
    dualcalc catalog list
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence

import numpy as np
import sympy as sp

from .errors import DualcalcError


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


def _show(args) -> int:
    from .activation import activation

    act = activation(args.activation, **_params(args.param))
    if args.target:
        from .network import Dense, serial

        layers: list = [Dense(W_std=1.0, b_std=0.0)]
        for _ in range(args.depth):
            layers += [act, Dense(W_std=1.0, b_std=0.0)]
        print(serial(*layers).source(args.target))
        return 0
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


def _register(args) -> int:
    from .catalog import parse_entry, user_catalog_dir
    from .formula import parse_formula
    from .activation import _toml_string

    params = _params(args.param)
    parse_formula(args.formula, params, require_all_params=True)
    folder = user_catalog_dir()
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f'name = "{args.name}"', f"formula = {_toml_string(args.formula)}"]
    if args.description:
        lines.append(f"description = {_toml_string(args.description)}")
    lines.append("[parameters]")
    lines += [f"{k} = {v!r}" for k, v in params.items()]
    text = "\n".join(lines) + "\n"
    parse_entry(text, source=args.name)  # validate before writing
    path = folder / f"{args.name}.toml"
    if path.exists() and not args.force:
        raise SystemExit(f"dualcalc: {path} exists; pass --force to replace it")
    from .fileio import atomic_write_text

    atomic_write_text(path, text)
    print(f"registered {args.name!r} in {path}")
    return 0


def _catalog_list(args) -> int:
    from .catalog import REGISTRY

    for name, entry in sorted(REGISTRY.all().items()):
        kind = "closed form" if entry.closed_form else "hermite"
        print(f"{name:20s} {kind:12s} {entry.formula}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dualcalc", description="Symbolic dual-activation compiler: "
                                "exact and sketched NNGP/NTK kernels for any activation.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("show", help="print an activation's dual, method and coefficients, or its generated code")
    s.add_argument("activation", help="catalog name or formula in x, e.g. gelu or 'x*erf(x)'")
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
    r.add_argument("--force", action="store_true", help="replace an existing user entry")
    r.set_defaults(func=_register)
    c = sub.add_parser("catalog", help="the activation catalog")
    csub = c.add_subparsers(dest="catalog_command", required=True)
    cl = csub.add_parser("list", help="list catalog entries")
    cl.set_defaults(func=_catalog_list)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DualcalcError as err:
        print(f"dualcalc: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
