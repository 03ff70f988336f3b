"""Version gate and upgraders, operating on raw program records.

A *record* is the plain-data form of a :class:`~compiler.ir.nodes.Program`
(dicts, lists, str, int, float, bytes, bool, None) as both encodings carry it:
:mod:`compiler.ir.binary` stores it as msgpack, :mod:`compiler.ir.parser`
builds it from text. Loading is always ``check_version`` -> ``upgrade`` ->
``from_record``. To change the format: bump ``IR_VERSION``, change
``to_record``/``from_record``, and register ``UPGRADERS[old] = fn`` where ``fn``
turns a record of version ``old`` into one of version ``old + 1``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List

from .errors import IRDecodeError, IRVersionError
from .. import pyast
from .nodes import DEF_STATEMENT, FACT_BACKWARD, Binding, CodeUnit, Definition, Header, Program, SourceLoc
from .version import IR_VERSION

Record = Dict[str, Any]

# version v -> function(record of version v) -> record of version v + 1
UPGRADERS: Dict[int, Callable[[Record], Record]] = {}


def _v1_to_v2(record: Record) -> Record:
    """Version 2 added the frontend's facts: ``CodeUnit.facts``/``target`` and ``Program.dynamic_names``.

    A version-1 program carries no analysis, so it gets the conservative one: ``dynamic`` True
    (every module is hooked, as version-1 runtimes did) and no dynamic names. A nested unit's
    ``invoke`` fact and ``as`` target are read from its with-header lines in the parent's
    source, which is how version-1 runtimes decided them; this runs once, when an old program
    is loaded.
    """
    units = record.get("units")
    if not isinstance(units, list):
        raise IRDecodeError("units: expected a list")
    by_id = {u.get("id"): u for u in units if isinstance(u, dict)}
    for unit in units:
        if not isinstance(unit, dict):
            continue
        parent = by_id.get(unit.get("parent")) if unit.get("parent") is not None else None
        header = _header_text(parent, unit) if parent is not None else ""
        unit["facts"] = ["invoke"] if ".invoke(" in header else []
        unit["target"] = _as_target(header) if header else None
    record["dynamic"] = True
    record["dynamic_names"] = []
    return record


def _header_text(parent: Record, unit: Record) -> str:
    try:
        lines = parent["source"].splitlines()
        first, last = unit["header"]
        start = parent["loc"][1]
        return "\n".join(lines[first - start: last - start + 1])
    except (KeyError, TypeError, ValueError, IndexError):
        return ""


def _as_target(header: str):
    """The first plain-name ``as`` target of the with-statement in ``header`` (None if absent)."""
    import ast
    import textwrap

    text = textwrap.dedent(header)
    for candidate in (text, text + "\n    pass\n"):
        try:
            tree = pyast.parse(candidate)
        except SyntaxError:
            continue
        if tree.body and isinstance(tree.body[0], ast.With):
            for item in tree.body[0].items:
                if isinstance(item.optional_vars, ast.Name):
                    return item.optional_vars.id
        return None
    return None


def _v2_to_v3(record: Record) -> Record:
    """Version 3 added the unit fact ``backward`` (a ``with <expr>.backward():`` gradient session).

    A version-2 producer never looked for it, so the upgraded program says so
    (``unknown_facts``) instead of guessing from source text: a unit without the fact may still
    open a gradient session, and what depends on the fact (the untrusted tier's refusal before a
    job runs) is left to the checks made while the job runs.
    """
    if not isinstance(record.get("units"), list):
        raise IRDecodeError("units: expected a list")
    record["unknown_facts"] = [FACT_BACKWARD]
    return record


UPGRADERS[1] = _v1_to_v2
UPGRADERS[2] = _v2_to_v3

OLDEST_VERSION = 1  # first version ever produced


def check_version(v: Any) -> int:
    """Return ``v`` if this runtime can load it (possibly via upgraders), else raise IRVersionError."""
    if type(v) is not int:
        raise IRVersionError("ir_version must be an integer, got %r" % (v,))
    if v > IR_VERSION:
        raise IRVersionError(
            "this IR was produced by a newer nnsight (ir_version %d); this runtime "
            "understands up to ir_version %d -- upgrade nnsight on this side" % (v, IR_VERSION))
    if v < OLDEST_VERSION:
        raise IRVersionError("unknown ir_version %d (versions start at %d)" % (v, OLDEST_VERSION))
    for step in range(v, IR_VERSION):
        if step not in UPGRADERS:
            raise IRVersionError(
                "ir_version %d is no longer supported (no upgrader from %d to %d)" % (v, step, step + 1))
    return v


def upgrade(record: Record) -> Record:
    """Bring a record of any supported version up to ``IR_VERSION``."""
    header = record.get("header") if isinstance(record, dict) else None
    if not isinstance(header, dict) or "ir_version" not in header:
        raise IRDecodeError("record has no header.ir_version")
    v = check_version(header["ir_version"])
    while v < IR_VERSION:
        record = UPGRADERS[v](record)
        v += 1
        record["header"]["ir_version"] = v
    return record


# -- Program <-> record (current version) ---------------------------------------------


def _loc_rec(loc: SourceLoc) -> list:
    return [loc.file, loc.line, loc.col]


def _binding_rec(b: Binding) -> Record:
    return {"name": b.name, "kind": b.kind, "value": b.value}


def _definition_rec(d: Definition) -> Record:
    rec: Record = {
        "name": d.name,
        "module": d.module,
        "source": d.source,
        "loc": _loc_rec(d.loc),
        "globals": [_binding_rec(b) for b in d.globals],
    }
    # Optional fields are written only when set, so definitions without them
    # keep the exact encoding they always had.
    if d.kind != DEF_STATEMENT:
        rec["kind"] = d.kind
    if d.cells:
        rec["cells"] = [_binding_rec(b) for b in d.cells]
    if d.attrs:
        rec["attrs"] = [_binding_rec(b) for b in d.attrs]
    return rec


def to_record(p: Program) -> Record:
    """The plain-data record of ``p`` (key order is fixed, so encodings are deterministic)."""
    h = p.header
    return {
        "header": {
            "ir_version": h.ir_version,
            "producer": h.producer,
            "python": h.python,
            "min_python": list(h.min_python),
            "features": [[name, line] for name, line in h.features],
        },
        "units": [
            {
                "id": u.id,
                "kind": u.kind,
                "source": u.source,
                "loc": _loc_rec(u.loc),
                "parent": u.parent,
                "header": list(u.header),
                "assigned": list(u.assigned),
                "target": u.target,
                "facts": list(u.facts),
                **({"reads": list(u.reads)} if u.reads else {}),  # optional: written only when set
            }
            for u in p.units
        ],
        "bindings": [_binding_rec(b) for b in p.bindings],
        "definitions": [_definition_rec(d) for d in p.definitions],
        "envoys": list(p.envoys),
        "dynamic": p.dynamic,
        "dynamic_names": list(p.dynamic_names),
        **({"unknown_facts": list(p.unknown_facts)} if p.unknown_facts else {}),  # optional: only when set
    }


class _Reader:
    """Type-checked access to record fields, with paths in error messages."""

    def __init__(self, value: Any, path: str):
        self.value = value
        self.path = path

    def fail(self, what: str) -> IRDecodeError:
        return IRDecodeError("%s: expected %s, got %s" % (self.path or "record", what, _short(self.value)))

    def has(self, key: str) -> bool:
        return isinstance(self.value, dict) and key in self.value

    def field(self, key: str) -> "_Reader":
        if not isinstance(self.value, dict):
            raise self.fail("a map")
        if key not in self.value:
            raise IRDecodeError("%s: missing field %r" % (self.path or "record", key))
        return _Reader(self.value[key], "%s.%s" % (self.path, key) if self.path else key)

    def items(self) -> List["_Reader"]:
        if not isinstance(self.value, list):
            raise self.fail("a list")
        return [_Reader(v, "%s[%d]" % (self.path, i)) for i, v in enumerate(self.value)]

    def int(self) -> int:
        if type(self.value) is not int:
            raise self.fail("an integer")
        return self.value

    def opt_int(self):
        return None if self.value is None else self.int()

    def str(self) -> str:
        if type(self.value) is not str:
            raise self.fail("a string")
        return self.value

    def bool(self) -> bool:
        if type(self.value) is not bool:
            raise self.fail("a boolean")
        return self.value

    def tuple_of(self, n: int) -> List["_Reader"]:
        items = self.items()
        if len(items) != n:
            raise self.fail("a list of %d items" % n)
        return items


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _loc(r: _Reader) -> SourceLoc:
    f, line, col = r.tuple_of(3)
    return SourceLoc(f.str(), line.int(), col.int())


def _opt_str(r: _Reader):
    return None if r.value is None else r.str()


def _binding(r: _Reader) -> Binding:
    return Binding(r.field("name").str(), r.field("kind").str(), r.field("value").value)


def _header(r: _Reader) -> Header:
    return Header(
        ir_version=r.field("ir_version").int(),
        producer=r.field("producer").str(),
        python=r.field("python").str(),
        min_python=tuple(x.int() for x in r.field("min_python").items()),
        features=tuple(
            (pair[0].str(), pair[1].int()) for pair in (f.tuple_of(2) for f in r.field("features").items())
        ),
    )


def _unit(r: _Reader) -> CodeUnit:
    first, last = r.field("header").tuple_of(2)
    return CodeUnit(
        id=r.field("id").int(),
        kind=r.field("kind").str(),
        source=r.field("source").str(),
        loc=_loc(r.field("loc")),
        parent=r.field("parent").opt_int(),
        header=(first.int(), last.int()),
        assigned=tuple(a.str() for a in r.field("assigned").items()),
        target=_opt_str(r.field("target")),
        facts=tuple(f.str() for f in r.field("facts").items()),
        reads=tuple(n.str() for n in r.field("reads").items()) if "reads" in r.value else (),
    )


def _definition(r: _Reader) -> Definition:
    return Definition(
        name=r.field("name").str(),
        module=r.field("module").str(),
        source=r.field("source").str(),
        loc=_loc(r.field("loc")),
        globals=tuple(_binding(b) for b in r.field("globals").items()),
        kind=r.field("kind").str() if r.has("kind") else DEF_STATEMENT,
        cells=tuple(_binding(b) for b in r.field("cells").items()) if r.has("cells") else (),
        attrs=tuple(_binding(b) for b in r.field("attrs").items()) if r.has("attrs") else (),
    )


def from_record(record: Record) -> Program:
    """Build a Program from a current-version record; IRDecodeError names the bad field."""
    r = _Reader(record, "")
    return Program(
        header=_header(r.field("header")),
        units=tuple(_unit(u) for u in r.field("units").items()),
        bindings=tuple(_binding(b) for b in r.field("bindings").items()),
        definitions=tuple(_definition(d) for d in r.field("definitions").items()),
        envoys=tuple(e.str() for e in r.field("envoys").items()),
        dynamic=r.field("dynamic").bool(),
        dynamic_names=tuple(n.str() for n in r.field("dynamic_names").items()),
        unknown_facts=tuple(f.str() for f in r.field("unknown_facts").items()) if r.has("unknown_facts") else (),
    )
