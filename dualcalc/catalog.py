"""The activation catalog: one TOML data file per activation.

A catalog file is *data*: it is read with :mod:`tomllib` and its formula strings
go through the safe parser like any user formula; nothing in it is executed.

File format (``catalog/relu.toml``)::

    name = "relu"
    formula = "max(x, 0)"            # activation in x and the parameters
    description = "Rectified linear unit"
    aliases = ["ReLU"]
    homogeneous_degree = 1           # optional: k = (q1 q2)^{p/2} κ(ρ)
    references = ["Cho & Saul 2009"]

    [parameters]                     # name = default value
    alpha = 0.01

    [dual]                           # absent, or closed_form = false: no closed form known
    nngp = "..."                     # in q1, q2, c, rho (= c/sqrt(q1 q2)) and the parameters
    ntk = "..."                      # optional: derived as d nngp / dc when absent
    rule = "polynomial"              # instead of nngp/ntk: a built-in rule derives them
    ntk_convention = "zero-a.e."     # sigma' holds a delta: the layer passes no NTK

Built-in rules: ``polynomial`` (any polynomial formula), ``rectified_monomial``
(parameter ``n``), ``piecewise`` (breakpoints anywhere, each piece a polynomial times
exp(a·x): the piecewise-exponential derivation, docs/piecewise.md).  Builders: ``builder = "polynomial"`` makes the formula from a
list parameter ``coefficients`` (m_0, m_1, ...).
"""
from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import CatalogError, UnknownActivationError

_TOP_KEYS = {"name", "formula", "description", "aliases", "homogeneous_degree", "references",
             "parameters", "dual", "builder", "notes"}
_DUAL_KEYS = {"nngp", "ntk", "rule", "closed_form", "ntk_convention"}
RULES = {"polynomial", "rectified_monomial", "piecewise"}
BUILDERS = {"polynomial"}
NTK_CONVENTIONS = {"price", "zero-a.e."}


@dataclass(frozen=True)
class CatalogEntry:
    """One activation of the catalog, as read from its TOML file."""

    name: str
    formula: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    nngp: str | None = None
    ntk: str | None = None
    rule: str | None = None
    ntk_convention: str = "price"
    homogeneous_degree: float | None = None
    aliases: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    builder: str | None = None
    source: str = "<memory>"

    @property
    def closed_form(self) -> bool:
        return self.nngp is not None or self.rule is not None


def builtin_catalog_dir() -> Path:
    """The shipped catalog: ``catalog/`` beside the packages (editable or installed)."""
    here = Path(__file__).resolve().parent
    for cand in (here.parent / "catalog", here / "catalog_data"):
        if cand.is_dir():
            return cand
    raise CatalogError(f"the built-in catalog folder is missing (looked beside {here})")


def user_catalog_dir() -> Path:
    """Where ``dualcalc register`` writes: $DUALCALC_CATALOG_DIR or ~/.config/dualcalc/catalog."""
    env = os.environ.get("DUALCALC_CATALOG_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "dualcalc" / "catalog"


def parse_entry(text: str, source: str = "<memory>") -> CatalogEntry:
    """Validate one catalog TOML text and return its entry (no code is run)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise CatalogError(f"{source}: invalid TOML: {err}") from None
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise CatalogError(f"{source}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
    for key in ("name", "formula"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise CatalogError(f"{source}: '{key}' must be a non-empty string")
    name = data["name"]
    if not name.replace("_", "a").isalnum() or not name[0].isalpha():
        raise CatalogError(f"{source}: name {name!r} must be letters, digits and '_' starting with a letter")
    params = data.get("parameters", {})
    if not isinstance(params, dict):
        raise CatalogError(f"{source}: [parameters] must be a table")
    for k, v in params.items():
        ok = isinstance(v, int | float) and not isinstance(v, bool)
        ok = ok or (isinstance(v, list) and all(isinstance(e, int | float) and not isinstance(e, bool) for e in v))
        if not ok:
            raise CatalogError(f"{source}: parameter {k!r} must be a number (or a list of numbers)")
    dual = data.get("dual", {})
    if not isinstance(dual, dict):
        raise CatalogError(f"{source}: [dual] must be a table")
    unknown = set(dual) - _DUAL_KEYS
    if unknown:
        raise CatalogError(f"{source}: unknown [dual] key(s) {sorted(unknown)}; allowed: {sorted(_DUAL_KEYS)}")
    if dual.get("closed_form", True) is False:
        if "nngp" in dual or "rule" in dual:
            raise CatalogError(f"{source}: closed_form = false contradicts nngp/rule")
        dual = {}
    rule = dual.get("rule")
    if rule is not None and rule not in RULES:
        raise CatalogError(f"{source}: unknown rule {rule!r}; known: {sorted(RULES)}")
    conv = dual.get("ntk_convention", "price")
    if conv not in NTK_CONVENTIONS:
        raise CatalogError(f"{source}: ntk_convention must be one of {sorted(NTK_CONVENTIONS)}")
    for key in ("nngp", "ntk"):
        if key in dual and not isinstance(dual[key], str):
            raise CatalogError(f"{source}: [dual] {key} must be a formula string")
    if "ntk" in dual and "nngp" not in dual:
        raise CatalogError(f"{source}: [dual] has ntk but no nngp")
    builder = data.get("builder")
    if builder is not None and builder not in BUILDERS:
        raise CatalogError(f"{source}: unknown builder {builder!r}; known: {sorted(BUILDERS)}")
    hd = data.get("homogeneous_degree")
    if hd is not None and not isinstance(hd, int | float):
        raise CatalogError(f"{source}: homogeneous_degree must be a number")
    return CatalogEntry(
        name=name,
        formula=data["formula"],
        description=str(data.get("description", "")),
        parameters=dict(params),
        nngp=dual.get("nngp"),
        ntk=dual.get("ntk"),
        rule=rule,
        ntk_convention=conv,
        homogeneous_degree=hd,
        aliases=tuple(data.get("aliases", ())),
        references=tuple(data.get("references", ())),
        builder=builder,
        source=source,
    )


def load_dir(folder: Path, *, strict: bool = True) -> tuple[dict[str, CatalogEntry], dict[str, str]]:
    """Read every ``*.toml`` in ``folder``: (entries by name, errors by file)."""
    entries: dict[str, CatalogEntry] = {}
    errors: dict[str, str] = {}
    if not folder.is_dir():
        return entries, errors
    for path in sorted(folder.glob("*.toml")):
        try:
            entry = parse_entry(path.read_text(encoding="utf-8"), source=str(path.name))
        except (CatalogError, UnicodeDecodeError, OSError) as err:
            if strict:
                raise CatalogError(str(err)) from None
            errors[path.name] = str(err)
            continue
        entries[entry.name] = entry
    return entries, errors


@lru_cache(maxsize=1)
def builtin_entries() -> dict[str, CatalogEntry]:
    return load_dir(builtin_catalog_dir())[0]


class Registry:
    """Name → catalog entry: the built-in catalog, the user catalog, and this process's registrations."""

    def __init__(self) -> None:
        self._registered: dict[str, CatalogEntry] = {}

    def add(self, entry: CatalogEntry) -> None:
        self._registered[entry.name] = entry

    def remove(self, name: str) -> None:
        self._registered.pop(name, None)

    def user_entries(self) -> tuple[dict[str, CatalogEntry], dict[str, str]]:
        return load_dir(user_catalog_dir(), strict=False)

    def all(self) -> dict[str, CatalogEntry]:
        out = dict(builtin_entries())
        out.update(self.user_entries()[0])
        out.update(self._registered)
        return out

    def lookup(self, name: str) -> CatalogEntry | None:
        if name in self._registered:
            return self._registered[name]
        table = self.all()
        if name in table:
            return table[name]
        lowered = name.lower()
        for entry in table.values():
            if lowered == entry.name.lower() or lowered in (a.lower() for a in entry.aliases):
                return entry
        return None

    def unknown(self, name: str) -> UnknownActivationError:
        names = sorted(self.all())
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        return UnknownActivationError(
            f"unknown activation {name!r}: not a catalog name, not registered, and not a formula in x.{hint} "
            f"Known names: {', '.join(names)}"
        )


REGISTRY = Registry()
