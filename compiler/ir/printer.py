"""Text form of a Program: readable, diff-able, and parsed back exactly by :mod:`.parser`.

Example::

    nnsight-ir 3
    producer "nnsight 0.9.0"
    python "3.11.7"
    min-python 3.9
    feature "match statement" 4
    dynamic false
    envoy "model.transformer.h.0"
    dynamic-name norm

    binding model model "model"
    binding scale value 0.5
    binding norm function 0

    unit 0 trace at "demo.py":12:4 parent=none header=11:11 assigned=["out"]
      | out = norm(model.transformer.h[0].output) * scale

    definition 0 "norm" module="__main__" at "demo.py":3:0
      global torch module "torch"
      | def norm(x):
      |     return x / x.norm()

A unit whose with-statement has an ``as`` target ends with ``as=NAME``, and one
with facts lists them last (``facts=["invoke"]``). A program upgraded from a version
that predates a fact lists it after its dynamic names (``unknown-fact backward``).
A definition of another kind than ``def`` says so (``definition 1 "make.f"
kind=local module=...``) and may list ``  cell NAME KIND VALUE`` and
``  attr NAME KIND VALUE`` lines after its globals.

Source lines are prefixed ``  | `` (``  |`` when empty). Lines holding control
or invisible characters, or ending in whitespace, are written as a quoted
string after ``  ! ``; a source not ending in a newline gets a final
``  \\ no newline at end`` line. Values (binding values, ``assigned``) use a
small literal syntax: ``None True False 12 -0x1f... 1.5 inf nan "str" b"ascii"
x"00ff" [a, b] {k: v}``.
"""
from __future__ import annotations

import re
import struct
from typing import Any, List

from .errors import IRError
from .nodes import DEF_STATEMENT, Binding, CodeUnit, Definition, Program, SourceLoc
from .values import plain_problem

NO_NEWLINE = "  \\ no newline at end"

# Characters never written raw: C0/C1 controls, DEL, surrogates, and invisible
# format characters (bidi overrides, zero-width, line separators, BOM, tags).
# A fixed list (not str.isprintable) so output is identical on every Python.
_HIDDEN = (
    "\x00-\x08\x0a-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u2028-\u202e"
    "\u2060-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff\U000e0000-\U000e007f"
)
_RAW_BAD = re.compile("[%s]|[ \t]$" % _HIDDEN)  # tabs are fine inside a raw source line
_QUOTE_BAD = re.compile('[%s\t"\\\\]' % _HIDDEN)
_SHORT = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_BARE_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_CANONICAL_NAN = b"\x7f\xf8\x00\x00\x00\x00\x00\x00"


def print_program(p: Program) -> str:
    """The text form of ``p`` (ends with a newline)."""
    h = p.header
    out: List[str] = [
        "nnsight-ir %d" % h.ir_version,
        "producer " + quote(h.producer),
        "python " + quote(h.python),
        "min-python " + ".".join("%d" % v for v in h.min_python),
    ]
    out += ["feature %s %d" % (quote(name), line) for name, line in h.features]
    out.append("dynamic " + ("true" if p.dynamic else "false"))
    out += ["envoy " + quote(e) for e in p.envoys]
    out += ["dynamic-name " + _word(n) for n in p.dynamic_names]
    out += ["unknown-fact " + _word(f) for f in p.unknown_facts]
    if p.bindings:
        out.append("")
        out += ["binding " + _binding(b) for b in p.bindings]
    for u in p.units:
        out += ["", _unit_line(u)]
        out += source_lines(u.source)
    for i, d in enumerate(p.definitions):
        out += ["", _definition_line(i, d)]
        out += ["  global " + _binding(b) for b in d.globals]
        out += ["  cell " + _binding(b) for b in d.cells]
        out += ["  attr " + _binding(b) for b in d.attrs]
        out += source_lines(d.source)
    return "\n".join(out) + "\n"


def _unit_line(u: CodeUnit) -> str:
    parent = "none" if u.parent is None else "%d" % u.parent
    target = "" if u.target is None else " as=" + _word(u.target)
    facts = " facts=" + format_literal(list(u.facts)) if u.facts else ""
    reads = " reads=" + format_literal(list(u.reads)) if u.reads else ""
    return "unit %d %s at %s parent=%s header=%d:%d assigned=%s%s%s%s" % (
        u.id, _word(u.kind), _loc(u.loc), parent, u.header[0], u.header[1],
        format_literal(list(u.assigned)), target, facts, reads)


def _definition_line(i: int, d: Definition) -> str:
    kind = "" if d.kind == DEF_STATEMENT else " kind=" + _word(d.kind)
    return "definition %d %s%s module=%s at %s" % (i, quote(d.name), kind, quote(d.module), _loc(d.loc))


def _binding(b: Binding) -> str:
    problem = plain_problem(b.value, "value")
    if problem:
        raise IRError("cannot print binding %r: %s" % (b.name, problem))
    text = "%s %s" % (_word(b.name), _word(b.kind))
    return text if b.value is None else text + " " + format_literal(b.value)


def _loc(loc: SourceLoc) -> str:
    return "%s:%d:%d" % (quote(loc.file), loc.line, loc.col)


def _word(s: str) -> str:
    return s if _BARE_WORD.match(s) else quote(s)


def source_lines(source: str) -> List[str]:
    """The prefixed lines that represent ``source`` exactly."""
    lines = source.split("\n")
    newline = source.endswith("\n")
    if newline:
        lines.pop()
    out = []
    for line in lines:
        if not line:
            out.append("  |")
        elif _RAW_BAD.search(line):
            out.append("  ! " + quote(line))
        else:
            out.append("  | " + line)
    if not newline:
        out.append(NO_NEWLINE)
    return out


def quote(s: str) -> str:
    """A double-quoted literal of ``s``; visible unicode stays raw."""
    return '"' + _QUOTE_BAD.sub(_escape, s) + '"'


def _escape(m: "re.Match[str]") -> str:
    ch = m.group()
    short = _SHORT.get(ch)
    if short is not None:
        return short
    o = ord(ch)
    if o < 0x100:
        return "\\x%02x" % o
    if o < 0x10000:
        return "\\u%04x" % o
    return "\\U%08x" % o


def format_literal(v: Any) -> str:
    """A plain-data value (see :func:`compiler.ir.values.plain_problem`) as a literal."""
    t = type(v)
    if v is None:
        return "None"
    if t is bool:
        return "True" if v else "False"
    if t is int:
        return "%d" % v if -(2 ** 64) < v < 2 ** 64 else hex(v)
    if t is float:
        return _float(v)
    if t is str:
        return quote(v)
    if t is bytes:
        return _bytes(v)
    if t is list:
        return "[" + ", ".join(format_literal(x) for x in v) + "]"
    if t is dict:
        return "{" + ", ".join("%s: %s" % (format_literal(k), format_literal(x)) for k, x in v.items()) + "}"
    raise IRError("cannot print a %s as a literal: %r" % (t.__name__, v))


def _float(x: float) -> str:
    if x != x:
        bits = struct.pack(">d", x)
        return "nan" if bits == _CANONICAL_NAN else "nan(0x%s)" % bits.hex()
    return repr(x)  # shortest round-tripping repr; "inf" / "-inf" for infinities


def _bytes(b: bytes) -> str:
    if all(0x20 <= c < 0x7F for c in b):
        return 'b"' + b.decode("ascii").replace("\\", "\\\\").replace('"', '\\"') + '"'
    return 'x"' + b.hex() + '"'
