r"""On-disk cache of derived duals.

One JSON file per formula in ``$DUALCALC_CACHE_DIR/duals`` (default: the user cache
directory, ``~/.cache/dualcalc/duals`` on Linux), named by the SHA-256 of the
canonical ``srepr`` of the formula, the library and engine versions and a
fingerprint of the closed-form catalog entries.  A file records either the
closed form (rule, k, k̇, convention, domain) or that no closed form was found
(and, for a time-out, after how long — a longer time limit tries again).

Safety: nothing is pickled or evaluated.  Expressions are stored as JSON trees of
their exact internal structure (:func:`to_tree`: ``["Add", ["Mul", ["Q", 1, 2], "q1"], …]``,
alongside a human-readable ``str`` copy) and rebuilt by :func:`from_tree`, a walker
that only knows the dual's symbols, exact numbers, a few constants, Add/Mul/Pow and a
fixed list of function constructors — no ``eval``, ``sympify`` or ``pickle``;
anything else makes the entry a cache miss.  (Rebuilding the exact ``.args`` with
``_from_args`` also makes a hit fast: nothing is re-simplified.)  Writes are atomic: a
temporary file in the same folder, flushed and fsync'ed, then ``os.replace`` —
a crash leaves either the old file or none, never a partial one.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import sympy as sp

from ..fileio import atomic_write_text, cache_dir as fileio_cache_dir
from ..symbols import c, q1, q2, rho, x
from .result import Derived
from .._version import __version__

FORMAT = 2


def _engine_version() -> str:
    """A hash of the derivation engine's own source (this package and the Φ₂ it prints): a new or
    changed rule invalidates the cached results — above all the cached "no closed form found" —
    without anyone having to remember to bump a number."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(here.glob("*.py")) + [here.parent / "bvn.py"]:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


ENGINE_VERSION = _engine_version()

_SYMBOLS = {"q1": q1, "q2": q2, "c": c, "rho": rho, "x": x}
_CONSTANTS = {"pi": sp.pi, "E": sp.E, "I": sp.I, "nan": sp.nan, "oo": sp.oo, "-oo": -sp.oo, "zoo": sp.zoo,
              "true": sp.true, "false": sp.false, "EulerGamma": sp.EulerGamma, "Half": sp.S.Half}
_FUNCTIONS = {
    "exp": sp.exp, "log": sp.log, "sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "sinh": sp.sinh,
    "cosh": sp.cosh, "tanh": sp.tanh, "asin": sp.asin, "acos": sp.acos, "atan": sp.atan, "atan2": sp.atan2,
    "erf": sp.erf, "erfc": sp.erfc, "Abs": sp.Abs, "sign": sp.sign, "Heaviside": sp.Heaviside, "re": sp.re,
    "im": sp.im, "gamma": sp.gamma, "Max": sp.Max, "Min": sp.Min,
}
_RELATIONS = {"StrictGreaterThan": sp.StrictGreaterThan, "StrictLessThan": sp.StrictLessThan,
              "GreaterThan": sp.GreaterThan, "LessThan": sp.LessThan, "Equality": sp.Eq,
              "And": sp.And, "Or": sp.Or, "Not": sp.Not}
_MAX_NODES = 2_000_000


class UnsafeCacheEntry(ValueError):
    """A cached expression used something outside the whitelist."""


def to_tree(e) -> object:
    """A SymPy expression as a JSON-able tree of its exact internal structure (``.args``)."""
    if isinstance(e, sp.Symbol):
        if e.name not in _SYMBOLS or _SYMBOLS[e.name] != e:
            raise UnsafeCacheEntry(f"symbol {e} cannot be cached")
        return e.name
    if isinstance(e, sp.Integer):
        return int(e)
    if isinstance(e, sp.Rational):
        return ["Q", int(e.p), int(e.q)]
    if isinstance(e, sp.Float):
        r = sp.Rational(e)  # exact: a binary float is a rational
        return ["F", int(r.p), int(r.q), int(e._prec)]
    for name, const in _CONSTANTS.items():
        if e is const:
            return ["C", name]
    name = type(e).__name__
    if name in ("Add", "Mul", "Pow", "Piecewise", "ExprCondPair") or name in _FUNCTIONS or name in _RELATIONS:
        return [name, *[to_tree(a) for a in e.args]]
    raise UnsafeCacheEntry(f"{name} cannot be cached")


def from_tree(tree) -> sp.Basic:
    """Rebuild :func:`to_tree`'s output, exactly, from whitelisted constructors only (no eval)."""
    count = [0]

    def build(t):
        count[0] += 1
        if count[0] > _MAX_NODES:
            raise UnsafeCacheEntry("cached expression too large")
        if isinstance(t, bool):
            raise UnsafeCacheEntry("unexpected boolean")
        if isinstance(t, int):
            return sp.Integer(t)
        if isinstance(t, str):
            if t in _SYMBOLS:
                return _SYMBOLS[t]
            raise UnsafeCacheEntry(f"unknown name {t[:40]!r}")
        if not isinstance(t, list) or not t or not isinstance(t[0], str):
            raise UnsafeCacheEntry("malformed cached expression")
        head, rest = t[0], t[1:]
        if head == "Q":
            if len(rest) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in rest) or rest[1] == 0:
                raise UnsafeCacheEntry("bad rational")
            return sp.Rational(rest[0], rest[1])
        if head == "F":
            if len(rest) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) for v in rest) \
                    or rest[1] <= 0 or not 1 <= rest[2] <= 10_000:
                raise UnsafeCacheEntry("bad float")
            return sp.Float(sp.Rational(rest[0], rest[1]), precision=rest[2])
        if head == "C":
            if len(rest) != 1 or rest[0] not in _CONSTANTS:
                raise UnsafeCacheEntry("bad constant")
            return _CONSTANTS[rest[0]]
        args = [build(a) for a in rest]
        if head in ("Add", "Mul"):
            if len(args) < 2 or not all(isinstance(a, sp.Expr) for a in args):
                raise UnsafeCacheEntry(f"bad {head}")
            return getattr(sp, head)._from_args(args)
        if head == "Pow":
            if len(args) != 2:
                raise UnsafeCacheEntry("bad Pow")
            return sp.Pow(*args, evaluate=False)
        if head == "ExprCondPair":
            return sp.functions.elementary.piecewise.ExprCondPair(*args)
        if head == "Piecewise":
            return sp.Piecewise(*args, evaluate=False)
        if head in _FUNCTIONS:
            return _FUNCTIONS[head](*args, evaluate=False)
        if head in _RELATIONS:
            return _RELATIONS[head](*args, evaluate=False)
        raise UnsafeCacheEntry(f"constructor {head[:40]!r} is not allowed")

    try:
        return build(tree)
    except RecursionError:
        raise UnsafeCacheEntry("cached expression nested too deeply") from None
    except (TypeError, ValueError) as err:
        if isinstance(err, UnsafeCacheEntry):
            raise
        raise UnsafeCacheEntry(f"malformed cached expression: {err}") from None


# -- location -------------------------------------------------------------------
def cache_dir() -> Path:
    """The ``duals`` subfolder of the cache folder (:func:`dualcalc.fileio.cache_dir`)."""
    return fileio_cache_dir("duals")


def cache_key(expr: sp.Expr, catalog: str) -> tuple[str, str]:
    """(file key, canonical text) for a formula."""
    canon = sp.srepr(expr)
    material = json.dumps([FORMAT, __version__, ENGINE_VERSION, catalog, canon])
    return hashlib.sha256(material.encode()).hexdigest(), canon


# -- load/store -------------------------------------------------------------------
class Entry:
    """A cache record: ``result`` (a :class:`Derived`) or None with ``reason``/``timeout``."""

    def __init__(self, result: Derived | None, reason: str = "", timeout: float | None = None):
        self.result = result
        self.reason = reason
        self.timeout = timeout


def load(key: str, canon: str) -> Entry | None:
    path = cache_dir() / f"{key}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    try:
        if data.get("format") != FORMAT or data.get("formula") != canon:
            return None
        res = data.get("result")
        if res is None:
            t = data.get("timeout")
            return Entry(None, str(data.get("reason", "")), float(t) if t is not None else None)
        conv = res["ntk_convention"]
        if conv not in ("price", "zero-a.e."):
            return None
        q_max = res.get("q_max")
        derived = Derived(
            nngp=from_tree(res["nngp"]), ntk=from_tree(res["ntk"]), rule=str(res["rule"]),
            ntk_convention=conv, domain=tuple(from_tree(d) for d in res.get("domain", [])),
            q_max=float(q_max) if q_max is not None else None, detail=str(res.get("detail", "")))
        for e in (derived.nngp, derived.ntk, *derived.domain):
            if not isinstance(e, sp.Expr) or not e.free_symbols <= {q1, q2, c, rho}:
                return None
        return Entry(derived)
    except (KeyError, TypeError, ValueError, UnsafeCacheEntry):
        return None


def store(key: str, canon: str, entry: Entry) -> bool:
    """Write atomically; False (and nothing written) when the folder is not writable."""
    data: dict = {"format": FORMAT, "engine": ENGINE_VERSION, "formula": canon}
    r = entry.result
    if r is None:
        data.update(result=None, reason=entry.reason, timeout=entry.timeout)
    else:
        try:
            trees = (to_tree(r.nngp), to_tree(r.ntk), [to_tree(d) for d in r.domain])
        except UnsafeCacheEntry:
            return False  # something the reader would refuse: do not cache it
        data["result"] = {
            "rule": r.rule, "ntk_convention": r.ntk_convention, "detail": r.detail,
            "nngp": trees[0], "ntk": trees[1], "domain": trees[2], "q_max": r.q_max,
            "nngp_text": sp.sstr(r.nngp), "ntk_text": sp.sstr(r.ntk),  # for people reading the file
        }
    try:
        text = json.dumps(data, separators=(",", ":"))
    except (TypeError, ValueError):
        return False
    return write_atomic(cache_dir() / f"{key}.json", text)


def write_atomic(path: Path, text: str) -> bool:
    """:func:`dualcalc.fileio.atomic_write_text`; False (nothing written) on an OSError."""
    try:
        atomic_write_text(path, text)
        return True
    except OSError:
        return False


def clear() -> int:
    """Delete every cached dual; returns how many files were removed."""
    n = 0
    folder = cache_dir()
    if folder.is_dir():
        for p in folder.glob("*.json"):
            try:
                p.unlink()
                n += 1
            except OSError:
                pass
    return n
