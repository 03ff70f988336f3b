"""Parse the text form written by :mod:`.printer` back into a Program (exact inverse).

The first line (``nnsight-ir N``) is checked by the version gate before
anything else is read. The rest is parsed into a record, upgraded if it is
older, and built into a Program (see :mod:`.upgraders`). Errors raise
:class:`~compiler.ir.errors.IRParseError` with a 1-based line and column;
text longer than ``max_str_bytes`` characters or literals nested deeper than
``max_depth`` (:class:`~.limits.DecodeLimits`) raise IRLimitError.
"""
from __future__ import annotations

import re
import struct
from typing import Any, Dict, List, Optional, Tuple

from .errors import IRParseError
from .limits import DecodeLimits, limits_or_default
from .nodes import Program
from .printer import NO_NEWLINE
from .upgraders import check_version, from_record, upgrade

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_INT = re.compile(r"-?(?:0x[0-9a-f]+|[0-9]+)")
_NUMBER = re.compile(
    r"-?(?:0x[0-9a-f]+|inf|nan(?:\(0x[0-9a-f]{16}\))?|[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)")
_STR_BODY = re.compile(r'(?:[^"\\]|\\.)*')
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)")
_SIMPLE_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t"}
_BYTES_BODY = re.compile(r'(?:[^"\\]|\\[\\"])*')
_HEX_BODY = re.compile(r"(?:[0-9a-f]{2})*")
_HEADER_LINE = re.compile(r"nnsight-ir (\S+)\Z")


def parse_program(text: str, *, limits: Optional[DecodeLimits] = None) -> Program:
    """Parse the text form of a program; raise IRParseError / IRVersionError / IRLimitError."""
    lim = limits_or_default(limits)
    if not isinstance(text, str):
        raise IRParseError("expected the text form as a str, got %s" % type(text).__name__, 1)
    if len(text) > lim.max_str_bytes:
        raise lim.exceeded("max_str_bytes", "program text length", len(text))
    try:
        record = _Parser(text, lim).record()
    except RecursionError:  # the caller was already deep in the stack
        raise lim.exceeded("max_depth", "program text literal nesting", "too deep for this stack") from None
    return from_record(upgrade(record))


class _Cursor:
    """A position in one line of text, with token readers."""

    def __init__(self, text: str, lineno: int, pos: int = 0, limits: Optional[DecodeLimits] = None):
        self.text = text
        self.lineno = lineno
        self.pos = pos
        self.limits = limits_or_default(limits)
        self.depth = 0

    def error(self, message: str, pos: Optional[int] = None) -> IRParseError:
        return IRParseError(message, self.lineno, (self.pos if pos is None else pos) + 1)

    def ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] == " ":
            self.pos += 1

    def at_end(self) -> bool:
        self.ws()
        return self.pos >= len(self.text)

    def end(self) -> None:
        if not self.at_end():
            raise self.error("unexpected text %r" % self.text[self.pos:self.pos + 20])

    def peek(self, s: str) -> bool:
        self.ws()
        return self.text.startswith(s, self.pos)

    def expect(self, s: str) -> None:
        if not self.peek(s):
            raise self.error("expected %r" % s)
        self.pos += len(s)

    def regex(self, pattern: "re.Pattern[str]", what: str) -> str:
        self.ws()
        m = pattern.match(self.text, self.pos)
        if not m or m.end() == self.pos:
            raise self.error("expected %s" % what)
        self.pos = m.end()
        return m.group()

    def word(self) -> str:
        return self.regex(_WORD, "a word")

    def name(self) -> str:
        """A bare word or a quoted string."""
        return self.string() if self.peek('"') else self.word()

    def int(self) -> int:
        tok = self.regex(_INT, "an integer")
        return int(tok, 16) if "0x" in tok else int(tok)

    def string(self) -> str:
        self.expect('"')
        start = self.pos - 1
        m = _STR_BODY.match(self.text, self.pos)
        if m.end() >= len(self.text) or self.text[m.end()] != '"':
            raise self.error("unterminated string", start)
        self.pos = m.end() + 1
        return _ESCAPE.sub(lambda e: self._unescape(e, start), m.group())

    def _unescape(self, m: "re.Match[str]", start: int) -> str:
        code = m.group(1)
        if code in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[code]
        if len(code) > 1:
            value = int(code[1:], 16)
            if value <= 0x10FFFF:
                return chr(value)
        raise self.error("bad escape \\%s in string" % code, start)

    def loc(self) -> List[Any]:
        file = self.string()
        self.expect(":")
        line = self.int()
        self.expect(":")
        return [file, line, self.int()]

    def literal(self) -> Any:
        """A plain-data literal: None True False ints floats strings bytes [..] {..}."""
        self.ws()
        text, pos = self.text, self.pos
        if text.startswith("[", pos) or text.startswith("{", pos):
            if self.depth >= 2 * self.limits.max_depth:  # a value tree level takes one or two brackets
                raise self.limits.exceeded("max_depth", "line %d: literal nesting" % self.lineno,
                                           "over %d brackets" % self.depth)
            self.depth += 1
            try:
                return self._list() if text[pos] == "[" else self._dict()
            finally:
                self.depth -= 1
        if text.startswith('"', pos):
            return self.string()
        if text.startswith('b"', pos):
            return self._bytes()
        if text.startswith('x"', pos):
            return self._hex()
        for word, value in (("None", None), ("True", True), ("False", False)):
            if text.startswith(word, pos) and not _WORD.match(text, pos + len(word)):
                self.pos += len(word)
                return value
        return self._number()

    def _list(self) -> list:
        self.expect("[")
        items: list = []
        while not self.peek("]"):
            if items:
                self.expect(",")
            items.append(self.literal())
        self.expect("]")
        return items

    def _dict(self) -> dict:
        self.expect("{")
        out: dict = {}
        while not self.peek("}"):
            if out:
                self.expect(",")
            start = self.pos
            key = self.literal()
            self.expect(":")
            try:
                out[key] = self.literal()
            except TypeError:
                raise self.error("unhashable dict key", start) from None
        self.expect("}")
        return out

    def _bytes(self) -> bytes:
        start = self.pos
        self.pos += 2
        m = _BYTES_BODY.match(self.text, self.pos)
        if m.end() >= len(self.text) or self.text[m.end()] != '"':
            raise self.error("unterminated or malformed bytes literal", start)
        self.pos = m.end() + 1
        body = m.group().replace('\\"', '"').replace("\\\\", "\\")
        try:
            return body.encode("ascii")
        except UnicodeEncodeError:
            raise self.error("non-ASCII character in b\"...\" literal", start) from None

    def _hex(self) -> bytes:
        start = self.pos
        self.pos += 2
        m = _HEX_BODY.match(self.text, self.pos)
        if m.end() >= len(self.text) or self.text[m.end()] != '"':
            raise self.error("malformed x\"...\" literal (expected lowercase hex pairs)", start)
        self.pos = m.end() + 1
        return bytes.fromhex(m.group())

    def _number(self) -> Any:
        tok = self.regex(_NUMBER, "a value")
        if _WORD.match(self.text, self.pos):
            raise self.error("expected a value")
        if "nan(" in tok:
            return struct.unpack(">d", bytes.fromhex(tok[tok.index("(") + 3:-1]))[0]
        if "0x" in tok:
            return int(tok, 16)
        if any(c in tok for c in ".ein"):
            return float(tok)
        try:
            return int(tok)
        except ValueError:  # over the int-to-str digit limit: the printer uses hex for those
            raise self.error("integer literal too long (write it in hex)") from None


class _Parser:
    """Line-driven parser producing a current-version record."""

    def __init__(self, text: str, limits: Optional[DecodeLimits] = None):
        self.limits = limits_or_default(limits)
        if "\r\n" in text:  # the printer never writes a raw CR: undo CRLF checkouts
            text = text.replace("\r\n", "\n")
        self.lines = text.split("\n")
        if self.lines and self.lines[-1] == "":
            self.lines.pop()
        self.i = 0
        self.header: Dict[str, Any] = {
            "ir_version": None, "producer": "", "python": "", "min_python": [3, 9], "features": []}
        self.seen: Dict[str, int] = {}
        self.units: List[Any] = []
        self.bindings: List[Any] = []
        self.definitions: List[Any] = []
        self.envoys: List[str] = []
        self.dynamic = True
        self.dynamic_names: List[str] = []
        self.unknown_facts: List[str] = []

    def record(self) -> Dict[str, Any]:
        self.header["ir_version"] = self._version_line()
        while self.i < len(self.lines):
            self._statement()
        record = {
            "header": self.header, "units": self.units, "bindings": self.bindings,
            "definitions": self.definitions, "envoys": self.envoys, "dynamic": self.dynamic,
            "dynamic_names": self.dynamic_names,
        }
        if self.unknown_facts:
            record["unknown_facts"] = self.unknown_facts
        return record

    def _cursor(self) -> _Cursor:
        return _Cursor(self.lines[self.i], self.i + 1, 0, self.limits)

    def _version_line(self) -> int:
        first = self.lines[0] if self.lines else ""
        m = _HEADER_LINE.match(first)
        if not m:
            raise IRParseError("expected 'nnsight-ir <version>' as the first line, got %r" % first[:40], 1, 1)
        token = m.group(1)
        version = int(token) if re.match(r"-?[0-9]+\Z", token) else token
        check_version(version)
        self.i = 1
        return version

    def _statement(self) -> None:
        line = self.lines[self.i]
        if not line.strip() or line.startswith("#"):
            self.i += 1
            return
        cur = self._cursor()
        if line.startswith(" "):
            raise cur.error("unexpected indented line (source lines belong after a unit or definition line)")
        keyword = cur.regex(re.compile(r"[a-z-]+"), "a statement keyword")
        handler = _STATEMENTS.get(keyword)
        if handler is None:
            raise cur.error("unknown statement %r" % keyword, 0)
        if keyword in _ONCE:
            if keyword in self.seen:
                raise cur.error("duplicate %r line (first on line %d)" % (keyword, self.seen[keyword]), 0)
            self.seen[keyword] = self.i + 1
        self.i += 1
        handler(self, cur)

    def _producer(self, cur: _Cursor) -> None:
        self.header["producer"] = cur.string()
        cur.end()

    def _python(self, cur: _Cursor) -> None:
        self.header["python"] = cur.string()
        cur.end()

    def _min_python(self, cur: _Cursor) -> None:
        parts = [cur.int()]
        while cur.peek("."):
            cur.expect(".")
            parts.append(cur.int())
        cur.end()
        self.header["min_python"] = parts

    def _feature(self, cur: _Cursor) -> None:
        name = cur.string()
        line = cur.int()
        cur.end()
        self.header["features"].append([name, line])

    def _dynamic(self, cur: _Cursor) -> None:
        word = cur.word()
        if word not in ("true", "false"):
            raise cur.error("expected 'true' or 'false'")
        cur.end()
        self.dynamic = word == "true"

    def _envoy(self, cur: _Cursor) -> None:
        self.envoys.append(cur.string())
        cur.end()

    def _dynamic_name(self, cur: _Cursor) -> None:
        self.dynamic_names.append(cur.name())
        cur.end()

    def _unknown_fact(self, cur: _Cursor) -> None:
        self.unknown_facts.append(cur.name())
        cur.end()

    def _binding(self, cur: _Cursor) -> None:
        self.bindings.append(_binding(cur))

    def _unit(self, cur: _Cursor) -> None:
        uid = cur.int()
        kind = cur.name()
        cur.expect("at")
        loc = cur.loc()
        cur.expect("parent=")
        if cur.peek("none"):
            cur.expect("none")
            parent = None
        else:
            parent = cur.int()
        cur.expect("header=")
        first = cur.int()
        cur.expect(":")
        last = cur.int()
        cur.expect("assigned=")
        start = cur.pos
        assigned = cur.literal()
        if type(assigned) is not list or not all(type(a) is str for a in assigned):
            raise cur.error("assigned= must be a list of strings", start)
        target = None
        if cur.peek("as="):
            cur.expect("as=")
            target = cur.name()
        facts: List[Any] = []
        if cur.peek("facts="):
            cur.expect("facts=")
            start = cur.pos
            facts = cur.literal()
            if type(facts) is not list or not all(type(f) is str for f in facts):
                raise cur.error("facts= must be a list of strings", start)
        reads: List[Any] = []
        if not cur.at_end():
            cur.expect("reads=")
            start = cur.pos
            reads = cur.literal()
            if type(reads) is not list or not reads or not all(type(n) is str for n in reads):
                raise cur.error("reads= must be a non-empty list of strings", start)
        cur.end()
        source, _ = self._block(allow_globals=False)
        record = {
            "id": uid, "kind": kind, "source": source, "loc": loc, "parent": parent,
            "header": [first, last], "assigned": assigned, "target": target, "facts": facts,
        }
        if reads:
            record["reads"] = reads
        self.units.append(record)

    def _definition(self, cur: _Cursor) -> None:
        cur.ws()
        start = cur.pos
        index = cur.int()
        if index != len(self.definitions):
            raise cur.error("definition %d out of order (expected %d)" % (index, len(self.definitions)), start)
        name = cur.string()
        kind = None
        if cur.peek("kind="):
            cur.expect("kind=")
            kind = cur.name()
        cur.expect("module=")
        module = cur.string()
        cur.expect("at")
        loc = cur.loc()
        cur.end()
        extra: Dict[str, List[Any]] = {"cell": [], "attr": []}
        source, globals_ = self._block(allow_globals=True, extra=extra)
        record = {"name": name, "module": module, "source": source, "loc": loc, "globals": globals_}
        if kind is not None:
            record["kind"] = kind
        if extra["cell"]:
            record["cells"] = extra["cell"]
        if extra["attr"]:
            record["attrs"] = extra["attr"]
        self.definitions.append(record)

    def _block(self, allow_globals: bool, extra: Optional[Dict[str, List[Any]]] = None) -> Tuple[str, List[Any]]:
        """The indented lines after a unit/definition line: globals (cells, attrs), then source."""
        owner = self.i  # 1-based number of the unit/definition line
        globals_: List[Any] = []
        lines: List[str] = []
        newline = True
        while self.i < len(self.lines) and self.lines[self.i].startswith("  "):
            line = self.lines[self.i]
            cur = self._cursor()
            if not newline:
                raise cur.error("source line after %r" % NO_NEWLINE.strip())
            if line == "  |" or line.startswith("  | "):
                lines.append(line[4:])
            elif line.startswith("  ! "):
                cur.pos = 4
                lines.append(cur.string())
                cur.end()
            elif line == NO_NEWLINE and lines:
                newline = False
            elif line.startswith("  global ") and allow_globals and not lines:
                cur.pos = len("  global ")
                globals_.append(_binding(cur))
            elif extra is not None and not lines and line.startswith(("  cell ", "  attr ")):
                cur.pos = len("  cell ")
                extra[line[2:6]].append(_binding(cur))
            else:
                raise cur.error("expected a source line ('  | ...', '  ! \"...\"')")
            self.i += 1
        if not lines:
            raise IRParseError("expected source lines ('  | ...') after this line", owner, 1)
        return "\n".join(lines) + ("\n" if newline else ""), globals_


def _binding(cur: _Cursor) -> Dict[str, Any]:
    name = cur.name()
    kind = cur.name()
    value = None if cur.at_end() else cur.literal()
    cur.end()
    return {"name": name, "kind": kind, "value": value}


_STATEMENTS = {
    "producer": _Parser._producer,
    "python": _Parser._python,
    "min-python": _Parser._min_python,
    "feature": _Parser._feature,
    "dynamic": _Parser._dynamic,
    "envoy": _Parser._envoy,
    "dynamic-name": _Parser._dynamic_name,
    "unknown-fact": _Parser._unknown_fact,
    "binding": _Parser._binding,
    "unit": _Parser._unit,
    "definition": _Parser._definition,
}
_ONCE = ("producer", "python", "min-python", "dynamic")
