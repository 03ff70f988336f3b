"""Structural checks of a Program; :func:`verify` reports every problem at once."""
from __future__ import annotations

import keyword
import sys
from typing import Any, List, Optional, Sequence

from .errors import IRVerifyError
from .. import pyast
from .nodes import (
    FACT_BACKWARD,
    FACT_LOCAL,
    UNIT_FACTS,
    BIND_BUILTIN,
    BIND_CLASS,
    BIND_FUNCTION,
    BIND_MODEL,
    BIND_MODULE,
    BIND_OBJECT,
    BIND_VALUE,
    BINDING_KINDS,
    DEF_KINDS,
    DEF_LOCAL,
    UNIT_BLOCK,
    UNIT_TRACE,
    Binding,
    Header,
    Program,
    SourceLoc,
)
from .values import plain_problem
from .version import IR_VERSION


def verify(p: Program) -> None:
    """Raise IRVerifyError listing every structural problem of ``p``."""
    problems: List[str] = []
    _header(p.header, problems)
    can_compile = _can_compile(p.header)
    _units(p, can_compile, problems)
    _bindings(p.bindings, len(p.definitions), "binding", problems, plain_names=True)
    for i, d in enumerate(p.definitions):
        where = "definition %d (%s)" % (i, d.name)
        if not _str(d.name) or not all(part.isidentifier() for part in d.name.split(".")):
            problems.append("%s: name must be a dotted identifier" % where)
        if not _str(d.module):
            problems.append("%s: module must be a non-empty string" % where)
        _loc(d.loc, where, problems)
        _source(d.source, d.loc, where, can_compile, problems)
        _bindings(d.globals, len(p.definitions), where + " global", problems, plain_names=True)
        if d.kind not in DEF_KINDS:
            problems.append("%s: unknown kind %r (known: %s)" % (where, d.kind, ", ".join(DEF_KINDS)))
        elif d.kind != DEF_LOCAL and (d.cells or d.attrs):
            problems.append("%s: only %r definitions have cells and attrs" % (where, DEF_LOCAL))
        _bindings(d.cells, len(p.definitions), where + " cell", problems)
        for c in d.cells:  # ``__class__`` is the cell of zero-argument super(); no other dunder is a free variable
            if _dunder(c.name) and c.name != "__class__":
                problems.append("%s cell %r: a cell cannot be named like a dunder: such names belong to the "
                                "interpreter" % (where, c.name))
        _bindings(d.attrs, len(p.definitions), where + " attr", problems)
        for a in d.attrs:
            if _dunder(a.name) and a.name not in _FUNCTION_DUNDERS:
                problems.append("%s attr %r: only %s may be set on a function" % (
                    where, a.name, " and ".join(sorted(_FUNCTION_DUNDERS))))
    for e in p.envoys:
        if not _str(e):
            problems.append("envoy %r: must be a non-empty string" % (e,))
    if len(set(p.envoys)) != len(p.envoys):
        problems.append("envoys: duplicate paths")
    if type(p.dynamic) is not bool:
        problems.append("dynamic: must be a bool, got %r" % (p.dynamic,))
    for name in p.dynamic_names:
        if not _identifier(name):
            problems.append("dynamic name %r is not an identifier" % (name,))
    if len(set(p.dynamic_names)) != len(p.dynamic_names):
        problems.append("dynamic names are not unique")
    _unknown_facts(p, problems)
    if problems:
        raise IRVerifyError(problems)


def _header(h: Header, problems: List[str]) -> None:
    if h.ir_version != IR_VERSION or type(h.ir_version) is not int:
        problems.append("header: ir_version %r is not the current version %d" % (h.ir_version, IR_VERSION))
    if not isinstance(h.producer, str) or not isinstance(h.python, str):
        problems.append("header: producer and python must be strings")
    mp = h.min_python
    if not (isinstance(mp, tuple) and len(mp) == 2 and all(_int(v) for v in mp) and mp >= (3, 0)):
        problems.append("header: min_python must be a (major, minor) pair >= (3, 0), got %r" % (mp,))
    for f in h.features:
        if not (isinstance(f, tuple) and len(f) == 2 and _str(f[0]) and _int(f[1])):
            problems.append("header: feature %r must be a (name, line) pair" % (f,))


def _can_compile(h: Header) -> bool:
    try:
        return sys.version_info[:2] >= tuple(h.min_python)
    except TypeError:
        return False


def _units(p: Program, can_compile: bool, problems: List[str]) -> None:
    if not p.units:
        problems.append("units: a program needs at least the root unit 0")
        return
    for i, u in enumerate(p.units):
        where = "unit %d" % i
        if u.id != i:
            problems.append("%s: id is %r, must equal its index %d" % (where, u.id, i))
        if i == 0:
            if u.kind != UNIT_TRACE:
                problems.append("%s: the root unit must be of kind %r, not %r" % (where, UNIT_TRACE, u.kind))
            if u.parent is not None:
                problems.append("%s: the root unit must have no parent, not %r" % (where, u.parent))
        else:
            if u.kind != UNIT_BLOCK:
                problems.append("%s: nested units must be of kind %r, not %r" % (where, UNIT_BLOCK, u.kind))
            if not (_int(u.parent) and 0 <= u.parent < i):
                problems.append("%s: parent %r must be the id of an earlier unit" % (where, u.parent))
        first, last = u.header if len(u.header) == 2 else (None, None)
        if not (_int(first) and _int(last) and 0 <= first <= last):
            problems.append("%s: header %r must be a (first, last) line range" % (where, u.header))
        elif i > 0 and not (1 <= first and last <= u.loc.line):
            problems.append("%s: header lines %d-%d must precede the body at line %d" % (
                where, first, last, u.loc.line))
        for name in u.assigned:
            if not _identifier(name):
                problems.append("%s: assigned name %r is not an identifier" % (where, name))
        if len(set(u.assigned)) != len(u.assigned):
            problems.append("%s: assigned names are not unique" % where)
        if u.target is not None and not _identifier(u.target):
            problems.append("%s: target %r is not an identifier" % (where, u.target))
        for fact in u.facts:
            if fact not in UNIT_FACTS:
                problems.append("%s: unknown fact %r (known: %s)" % (where, fact, ", ".join(UNIT_FACTS)))
        if len(set(u.facts)) != len(u.facts):
            problems.append("%s: facts are not unique" % where)
        if u.reads and FACT_LOCAL not in u.facts:
            problems.append("%s: reads= is only for a unit with the %r fact" % (where, FACT_LOCAL))
        if FACT_LOCAL in u.facts and i == 0:
            problems.append("%s: the root unit cannot be a local block" % where)
        if FACT_BACKWARD in u.facts and i == 0:
            problems.append("%s: the root unit cannot be a gradient session" % where)
        for name in u.reads:
            if not _identifier(name):
                problems.append("%s: read name %r is not an identifier" % (where, name))
        if len(set(u.reads)) != len(u.reads):
            problems.append("%s: read names are not unique" % where)
        _loc(u.loc, where, problems)
        _source(u.source, u.loc, where, can_compile, problems)


def _unknown_facts(p: Program, problems: List[str]) -> None:
    for fact in p.unknown_facts:
        if fact not in UNIT_FACTS:
            problems.append("unknown_facts: %r is not a unit fact (known: %s)" % (fact, ", ".join(UNIT_FACTS)))
        elif any(fact in u.facts for u in p.units):
            problems.append("unknown_facts: %r is listed as not looked for, yet a unit has it" % fact)
    if len(set(p.unknown_facts)) != len(p.unknown_facts):
        problems.append("unknown_facts: not unique")


def _loc(loc: SourceLoc, where: str, problems: List[str]) -> None:
    if not (isinstance(loc, SourceLoc) and isinstance(loc.file, str) and _int(loc.line) and _int(loc.col)
            and loc.line >= 1 and loc.col >= 0):
        problems.append("%s: bad source location %r" % (where, loc))


def _source(src: Any, loc: SourceLoc, where: str, can_compile: bool, problems: List[str]) -> None:
    if not isinstance(src, str):
        problems.append("%s: source must be a string" % where)
        return
    if not src.endswith("\n"):
        problems.append("%s: source must end with a newline" % where)
    if can_compile:
        # Parse only: return/yield/await outside a function are legal here, because
        # the runtime decides how a unit is wrapped.
        try:
            pyast.parse(src, getattr(loc, "file", "<ir>"))
        except SyntaxError as e:
            problems.append("%s: source does not parse: %s (source line %s)" % (where, e.msg, e.lineno))
        except ValueError as e:  # e.g. null bytes
            problems.append("%s: source does not parse: %s" % (where, e))


def _bindings(bindings: Sequence[Binding], n_definitions: int, what: str, problems: List[str],
              plain_names: bool = False) -> None:
    seen = set()
    for b in bindings:
        where = "%s %r" % (what, b.name)
        if not _identifier(b.name):
            problems.append("%s: name is not an identifier" % where)
        elif plain_names and _dunder(b.name) and not (b.name in _DATA_DUNDERS and b.kind == BIND_VALUE):
            problems.append("%s: a binding cannot be named like a dunder (%s): such names belong to the "
                            "interpreter" % (where, b.name))
        if b.name in seen:
            problems.append("%s: duplicate name" % where)
        seen.add(b.name)
        if b.kind not in BINDING_KINDS:
            problems.append("%s: unknown kind %r (known: %s)" % (where, b.kind, ", ".join(BINDING_KINDS)))
            continue
        problem = _value_problem(b, n_definitions)
        if problem:
            problems.append("%s: %s" % (where, problem))


def _value_problem(b: Binding, n_definitions: int) -> Optional[str]:
    v = b.value
    if b.kind in (BIND_FUNCTION, BIND_CLASS):
        if not (_int(v) and 0 <= v < n_definitions):
            return "value %r must index one of the %d definitions" % (v, n_definitions)
        return None
    if b.kind == BIND_MODULE and not (_str(v) and all(part.isidentifier() for part in v.split("."))):
        return "value %r must be a dotted module name" % (v,)
    if b.kind == BIND_OBJECT and not (_str(v) and v.count(":") == 1 and all(v.split(":"))):
        return "value %r must be 'module:qualname'" % (v,)
    if b.kind == BIND_MODEL and not _str(v):
        return "value %r must be an envoy path" % (v,)
    if b.kind == BIND_BUILTIN and not _str(v):
        return "value %r must be a builtin name" % (v,)
    return plain_problem(v, "value")


def _identifier(name: Any) -> bool:
    return isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)


#: Dunder globals a module may carry, as plain data only (a package's ``__package__``, ...).
_DATA_DUNDERS = frozenset(("__package__", "__doc__", "__all__", "__version__"))
#: Function attributes a DEF_LOCAL may carry besides plain names.
_FUNCTION_DUNDERS = frozenset(("__defaults__", "__kwdefaults__"))


def _dunder(name: Any) -> bool:
    return isinstance(name, str) and len(name) > 4 and name.startswith("__") and name.endswith("__")


def _int(v: Any) -> bool:
    return type(v) is int


def _str(v: Any) -> bool:
    return isinstance(v, str) and bool(v)
