"""Fast path of :func:`compiler.frontend.lower.lower` on Python's own ``ast``.

``lower()`` with libcst costs tens of milliseconds (metadata resolution) plus
the libcst import on first use; this module produces the same
:class:`~compiler.ir.nodes.Program` from ``ast`` in well under a millisecond
for the common case, and declines (returns None, the caller then runs the
libcst path) whenever it cannot promise the identical result:

* the text does not parse with the running interpreter's ``ast`` (newer
  syntax, notebook magics, syntax errors elsewhere in the file), starts with a
  BOM, or contains form feeds or lone ``\\r`` line ends;
* the line is in no top-level statement, no with-header covers it, or the
  with-statement is ``async with`` (the libcst path raises the error);
* a backslash continuation ends a line between a ``with`` keyword and its
  first body statement (colon line / suite kind not provable);
* a nested with-statement whose header starts with ``(`` (parenthesized
  context managers need the lowering pass), a starred subscript (``a[*b]``),
  PEP 695 type parameters / ``type`` statements, template strings, and on
  3.12+ any f-string that may use PEP 701 syntax;
* a decorated first body statement whose ``@`` is not where expected;
* anything raising inside the fast path.

``NNSIGHT_FRONTEND=libcst`` (or :data:`ENABLED` = False) forces the libcst path.
"""
from __future__ import annotations

import ast
import io
import os
import re
import sys
import tokenize
from typing import Dict, FrozenSet, List, Optional, Sequence, Set, Tuple

from ..fallbacks import FALLBACKS, reason_of
from ..ir.nodes import (BIND_RUNTIME, FACT_BACKWARD, FACT_INVOKE, UNIT_BLOCK, UNIT_TRACE, Binding, CodeUnit, Header,
                        Program, SourceLoc)
from ..ir.version import MIN_PYTHON, producer_nnsight, producer_python
from .bodytext import cut_body, strip_eol
from .fast_accesses import scan_statements
from .fast_names import Decline, analyze_names_ast

ENABLED = True
CHUNKS = True  # parse only the with-statement at the line (False: always the whole text)

_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")  # = compiler.frontend.parse.split_lines

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_WITHS = (ast.With, ast.AsyncWith)
_PY312 = sys.version_info >= (3, 12)
_MATCH = getattr(ast, "Match", None)
_TRY_STAR = getattr(ast, "TryStar", None)
_DECLINE_TYPES = tuple(
    t for t in (getattr(ast, "TypeAlias", None), getattr(ast, "TemplateStr", None), getattr(ast, "Interpolation", None))
    if t is not None
)


def enabled() -> bool:
    return ENABLED and os.environ.get("NNSIGHT_FRONTEND", "") != "libcst"


def lower(text: str, filename: str, lineno: int, *, first_line: int = 1) -> Program:
    """:func:`compiler.frontend.lower.lower`, on ``ast`` when provably identical."""
    if enabled():
        program = try_lower(text, filename, lineno, first_line=first_line)
        if program is not None:
            return program
    from .lower import lower as lower_libcst

    return lower_libcst(text, filename, lineno, first_line=first_line)


def lower_with_accesses(text: str, filename: str, lineno: int, *, first_line: int = 1,
                        lines: Optional[Sequence[str]] = None):
    """``(program, report)``: :func:`lower`, plus the root unit's access report
    (:func:`compiler.frontend.accesses.scan_accesses` of its source) computed on the tree
    already parsed, or None when only the libcst path could lower it or scan it.

    ``lines``: ``text`` already split after each ``\\n`` (a text without ``\\r``), if the
    caller has that split (:attr:`~compiler.frontend.capture.CapturedSource.lines`)."""
    if enabled():
        try:
            return _lower(text, filename, lineno, first_line, accesses=True, lines=lines)
        except Exception as exc:  # Decline, SyntaxError, or a bug here: the libcst path decides
            FALLBACKS.note("frontend.lower", f"{filename}:{lineno}: {reason_of(exc)}")
    from .lower import lower as lower_libcst

    return lower_libcst(text, filename, lineno, first_line=first_line), None


def try_lower(text: str, filename: str, lineno: int, *, first_line: int = 1) -> Optional[Program]:
    """The program, or None when the fast path declines."""
    try:
        return _lower(text, filename, lineno, first_line)
    except Exception as exc:  # Decline, SyntaxError, or a bug here: the libcst path decides
        FALLBACKS.note("frontend.lower", f"{filename}:{lineno}: {reason_of(exc)}")
        return None


class _Lines:
    def __init__(self, text: str, lines: Optional[Sequence[str]] = None) -> None:
        self.lines = _LINE.findall(text) if lines is None else lines
        self.first_statements: Dict[int, Tuple[int, int, bool]] = {}  # id(with node) -> _first_statement

    def char_col(self, line: int, byte_col: int) -> int:
        s = self.lines[line - 1]
        if s.isascii():
            return byte_col
        return len(s.encode("utf-8")[:byte_col].decode("utf-8"))


_TREES: dict = {}  # (filename, text) -> parsed module: a file with many call sites is parsed once
TREES_BOUND = 8


def tree_cache_size() -> int:
    """Parsed files kept (at most TREES_BOUND)."""
    return len(_TREES)


def _parse(text: str, filename: str) -> ast.Module:
    """``ast.parse(text)``, remembered for the last few files (the trees are only read)."""
    key = (filename, text)
    tree = _TREES.get(key)
    if tree is None:
        if len(_TREES) >= TREES_BOUND:
            _TREES.clear()
        tree = _TREES[key] = ast.parse(text)
    return tree


def _lower(text: str, filename: str, lineno: int, first_line: int, accesses: bool = False,
           lines: Optional[Sequence[str]] = None):
    if "\x0c" in text or text.startswith("\ufeff"):
        raise Decline("form feed / BOM")
    if "\r" in text:
        if text.count("\r") != text.count("\r\n"):
            raise Decline("lone CR")
        lines = None  # (a given split is only after \n)
    src = _Lines(text, lines)
    lines = src.lines
    line = lineno - first_line + 1
    if not 1 <= line <= len(lines):
        raise Decline("line outside text")
    chunk = _with_chunk(lines, line) if CHUNKS else None
    if chunk is not None:
        try:  # parse only the with-statement; anything unexpected: parse the whole text
            return _lower_at(src, _parse_chunk(lines, *chunk), filename, line, first_line, accesses)
        except Exception as exc:
            FALLBACKS.note("frontend.with_chunk", f"{filename}:{lineno}: {reason_of(exc)}")
    tree = _parse(text, filename)
    top = None
    for stmt in tree.body:
        first = min([stmt.lineno] + [d.lineno for d in getattr(stmt, "decorator_list", ())])
        last = getattr(stmt, "end_lineno", None) or stmt.lineno
        if first <= line <= last:
            top = (stmt, first, last)
            break
    if top is None:
        raise Decline("no statement at line")
    return _lower_at(src, top, filename, line, first_line, accesses)


def _with_chunk(lines: List[str], line: int) -> Optional[Tuple[int, int, int]]:
    """``(first, last, indent)``: the lines of the with-statement whose header holds ``line``,
    found from indentation alone (or None).

    The ``with`` keyword begins its line; the statement ends before the next code line indented
    no deeper than it (a closing bracket continues a header). A wrong guess can't go unnoticed:
    a cut inside a bracket, a string or after a backslash doesn't parse, and a chunk whose
    with-header doesn't hold ``line`` is declined by :func:`_lower_at`. Tabs: None (no guessing
    about tab stops).
    """
    first = line
    while True:
        text = lines[first - 1]
        body = text.lstrip(" ")
        if body.startswith("with") and body[4:5] in (" ", "(", "\\"):
            break
        first -= 1
        if first < max(1, line - 50):
            return None
    indent = len(text) - len(body)
    if indent and first == 1:
        return None
    last = first
    for n in range(first + 1, len(lines) + 1):
        text = lines[n - 1]
        body = text.lstrip(" ")
        if body[:1] == "\t":
            return None
        if not body.strip() or body[0] == "#":
            continue
        if len(text) - len(body) <= indent and body[0] not in ")]}":
            break
        last = n
    return first, last, indent


def _parse_chunk(lines: List[str], first: int, last: int, indent: int) -> Tuple[ast.With, int, int]:
    """The with-statement of lines ``first..last``, parsed with the positions it has in the text
    (blank lines before it; an ``if 1:`` line right above an indented one)."""
    body = "".join(lines[first - 1:last])
    if indent:
        tree = ast.parse("\n" * (first - 2) + "if 1:\n" + body)
        (wrapper,) = tree.body
        node = wrapper.body[0]
        if len(wrapper.body) != 1:
            raise Decline("chunk holds more than one statement")
    else:
        tree = ast.parse("\n" * (first - 1) + body)
        node = tree.body[0]
        if len(tree.body) != 1:
            raise Decline("chunk holds more than one statement")
    if not isinstance(node, _WITHS) or node.lineno != first:
        raise Decline("chunk is not one with-statement")
    return node, first, node.end_lineno


def _lower_at(src: _Lines, top, filename: str, line: int, first_line: int, accesses: bool):
    """Lower the with-statement whose header holds ``line``, inside top-level statement ``top``
    (``(statement, first line, last line)``)."""
    lines = src.lines
    stmt, top_first, top_last = top
    # the with-statement whose header covers the line (innermost = latest first line)
    found = None
    found_first = -1
    for node in _withs_around(stmt, line):
        if node.lineno > found_first:
            first, last = _header_range(src, node)
            if first <= line <= last:
                found, found_first = node, first
    if found is None or isinstance(found, ast.AsyncWith):
        raise Decline("not found / async")

    withs: List[Tuple[ast.With, Optional[int]]] = [(found, None)]
    _nested_withs(found.body, 0, withs)
    scan = _scan_body(src, found.body, {id(n) for n, _ in withs[1:]})
    verbatim = _string_lines(lines, top_first, top_last) if scan.multiline_strings else frozenset()

    unit_of = {id(node): i for i, (node, _) in enumerate(withs)}
    names = analyze_names_ast(found.body, unit_of)

    shift = first_line - 1
    units = []
    for uid, (node, parent) in enumerate(withs):
        header = _header_range(src, node)
        source, first, col = _body_source(src, node, verbatim)
        units.append(
            CodeUnit(
                id=uid,
                kind=UNIT_TRACE if parent is None else UNIT_BLOCK,
                source=source,
                loc=SourceLoc(filename, first + shift, col),
                parent=parent,
                header=(header[0] + shift, header[1] + shift),
                assigned=names.assigned.get(uid, ()),
                target=_as_target(node),
                facts=_unit_facts(node) if parent is not None else (),
            )
        )
    report = scan_statements(found.body, lines)
    if report is None:  # the scanner declined on the parsed body: scan the root unit's text
        from .fast_accesses import scan_accesses

        report = scan_accesses(units[0].source)
    found_features = {name: (line_ + shift, version) for name, (line_, version) in scan.features.items()}
    min_python = max([MIN_PYTHON] + [v for _, v in found_features.values()])
    features = tuple(sorted(((n, l) for n, (l, _) in found_features.items()), key=lambda f: (f[1], f[0])))
    program = Program(
        header=Header(
            producer=_PRODUCER[0] if _PRODUCER else _producer(),
            python=_PRODUCER[1],
            min_python=min_python,
            features=features,
        ),
        units=tuple(units),
        bindings=tuple(Binding(name, BIND_RUNTIME) for name in names.free),
        **report.ir_fields(),
    )
    if features:  # lowerable syntax (e.g. match) for older interpreters: same passes as libcst's path
        from ..passes import lower_syntax

        program = lower_syntax(program)
    if len(units) > 1 and ".local(" in units[0].source:  # cheap test first: most programs have none
        from .local_blocks import mark_local_blocks

        program = mark_local_blocks(program)
    if not accesses:
        return program
    return program, report


def _as_target(node) -> Optional[str]:
    """The first plain-name ``as`` target of the with-statement ``node`` (= lower.as_target)."""
    for item in node.items:
        if isinstance(item.optional_vars, ast.Name):
            return item.optional_vars.id
    return None


def _header_calls(node, method: str) -> bool:
    """Does the with-header of ``node`` call ``<something>.<method>(...)``? (= lower.header_calls)"""
    for item in node.items:
        for sub in ast.walk(item.context_expr):
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr == method:
                return True
    return False


def _unit_facts(node) -> Tuple[str, ...]:
    """The facts of a nested unit from its with-header (= lower.unit_facts)."""
    return tuple(fact for fact, method in ((FACT_INVOKE, "invoke"), (FACT_BACKWARD, "backward"))
                 if _header_calls(node, method))


_PRODUCER: List[str] = []  # ["nnsight <version>", "3.X.Y"], filled on first use


def _producer() -> str:
    _PRODUCER[:] = ["nnsight " + producer_nnsight(), producer_python()]
    return _PRODUCER[0]


_STMT_LISTS = ("body", "orelse", "finalbody", "handlers", "cases")


def _withs_around(stmt, line: int):
    """The with-statements (at any depth in statement lists) whose lines span ``line``.

    Only statements spanning the line are entered, instead of walking every node.
    """
    todo = [stmt]
    while todo:
        node = todo.pop()
        if isinstance(node, _WITHS) and node.lineno <= line:
            yield node
        for field in _STMT_LISTS:
            children = getattr(node, field, None)
            if not children:
                continue
            for child in children:
                first = getattr(child, "lineno", None)
                if first is None:  # except handler / match case: its own statement list
                    todo.append(child)
                elif first <= line <= (child.end_lineno or first) or getattr(child, "decorator_list", None):
                    todo.append(child)


# Text without any of these can't hold a node _scan_body reacts to (nested with, match, except*,
# starred subscript, def/class type parameters, type alias, strings and f-/t-strings).
_SCAN_TRIGGERS = ("with", "match", "except", "*", "def", "class", "type", "'", '"')
_SCAN_TRIGGER = re.compile("|".join(re.escape(t) for t in _SCAN_TRIGGERS))


def _walk(node):
    """All nodes under ``node`` (any order): ``ast.walk`` without its generator layers."""
    AST = ast.AST
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        for field in n._fields:
            v = getattr(n, field, None)
            if type(v) is list:
                stack.extend(x for x in v if isinstance(x, AST))
            elif isinstance(v, AST):
                stack.append(v)


def _first_statement(src: _Lines, node) -> Tuple[int, int, bool]:
    """``(line, char col, indented)`` of the with-body's first statement (decorators included)."""
    found = src.first_statements.get(id(node))
    if found is None:
        found = src.first_statements[id(node)] = _find_first_statement(src, node)
    return found


def _find_first_statement(src: _Lines, node) -> Tuple[int, int, bool]:
    stmt = node.body[0]
    decorators = getattr(stmt, "decorator_list", None)
    lines = src.lines
    if decorators:
        line = decorators[0].lineno
        text = strip_eol(lines[line - 1])
        body = text.lstrip(" \t")
        col = len(text) - len(body)
        # the '@' must begin the line, right before the decorator expression
        at = src.char_col(line, decorators[0].col_offset)
        if not body.startswith("@") or text[col + 1:at].strip() != "":
            raise Decline("decorator layout")
        return line, col, True
    line = stmt.lineno
    text = strip_eol(lines[line - 1])
    col = src.char_col(line, stmt.col_offset)
    return line, col, text[:col].strip() == ""


def _header_range(src: _Lines, node) -> Tuple[int, int]:
    """Lines (first, last) of a with-header: the ``with`` keyword .. the colon."""
    first = node.lineno
    stmt_line, _, indented = _first_statement(src, node)
    lines = src.lines
    for n in range(first, stmt_line + 1):
        if strip_eol(lines[n - 1]).endswith("\\"):
            raise Decline("backslash continuation in header")
    if not indented:
        return first, max(first, stmt_line)
    if stmt_line <= first:
        raise Decline("indented body on the header line")
    last = stmt_line - 1
    while last > first:
        s = lines[last - 1].strip()
        if s and not s.startswith("#"):
            break
        last -= 1
    return first, max(first, last)


def _body_source(src: _Lines, node, verbatim: FrozenSet[int]) -> Tuple[str, int, int]:
    """As :func:`compiler.frontend.dedent.body_source` (same cutting rule)."""
    first, col, indented = _first_statement(src, node)
    return cut_body(src.lines, first, node.body[-1].end_lineno, col, indented, verbatim)


def _nested_withs(body: Sequence[ast.stmt], parent: int, out: list) -> None:
    """= compiler.frontend.lower.nested_withs (pre-order, not inside def/class)."""
    for stmt in body:
        if isinstance(stmt, _SCOPES):
            continue
        if isinstance(stmt, ast.With):
            out.append((stmt, parent))
            _nested_withs(stmt.body, len(out) - 1, out)
            continue
        for field in ("body", "handlers", "orelse", "finalbody", "cases"):
            children = getattr(stmt, field, None)
            if not children:
                continue
            for child in children:
                if isinstance(child, ast.stmt):
                    _nested_withs([child], parent, out)
                else:  # except handler / match case
                    _nested_withs(child.body, parent, out)


class _Scan:
    def __init__(self) -> None:
        self.features: Dict[str, Tuple[int, Tuple[int, int]]] = {}
        self.multiline_strings = False

    def feature(self, name: str, line: int, version: Tuple[int, int]) -> None:
        if name not in self.features or line < self.features[name][0]:
            self.features[name] = (line, version)


def _scan_body(src: _Lines, body: Sequence[ast.stmt], nested: Set[int]) -> _Scan:
    """Features (= compiler.frontend.features.scan_features) and what the fast path declines."""
    scan = _Scan()
    text = "".join(src.lines[body[0].lineno - 1:body[-1].end_lineno])
    if not _SCAN_TRIGGER.search(text):
        return scan
    for stmt in body:
        for node in _walk(stmt):
            if isinstance(node, _WITHS):
                after = strip_eol(src.lines[node.lineno - 1])[src.char_col(node.lineno, node.col_offset):]
                after = after[5:] if isinstance(node, ast.With) else after.split(None, 1)[1][4:]
                if after.lstrip(" \t").startswith("(") or not after.strip():
                    raise Decline("possibly parenthesized with")
            elif _MATCH is not None and isinstance(node, _MATCH):
                scan.feature("match statement", node.lineno, (3, 10))
            elif _TRY_STAR is not None and isinstance(node, _TRY_STAR):
                scan.feature("except*", node.lineno, (3, 11))
            elif isinstance(node, ast.Subscript):
                s = node.slice
                if isinstance(s, ast.Starred) or (
                    isinstance(s, ast.Tuple) and any(isinstance(e, ast.Starred) for e in s.elts)
                ):
                    raise Decline("starred subscript")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if getattr(node, "type_params", None):
                    raise Decline("type parameters")
            elif _DECLINE_TYPES and isinstance(node, _DECLINE_TYPES):
                raise Decline("type alias / template string")
            elif isinstance(node, ast.JoinedStr):
                if node.end_lineno > node.lineno:
                    scan.multiline_strings = True
                if _PY312:
                    _check_fstring(src, node)
            elif isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
                if node.end_lineno > node.lineno:
                    scan.multiline_strings = True
    return scan


def _segment(src: _Lines, node) -> str:
    lines = src.lines
    if node.lineno == node.end_lineno:
        b = lines[node.lineno - 1].encode("utf-8")
        return b[node.col_offset:node.end_col_offset].decode("utf-8")
    parts = [lines[node.lineno - 1].encode("utf-8")[node.col_offset:].decode("utf-8")]
    parts.extend(lines[n - 1] for n in range(node.lineno + 1, node.end_lineno))
    parts.append(lines[node.end_lineno - 1].encode("utf-8")[:node.end_col_offset].decode("utf-8"))
    return "".join(parts)


def _check_fstring(src: _Lines, node) -> None:
    """Decline an f-string that may use PEP 701 syntax (features._fstring_needs_312)."""
    if not any(isinstance(v, ast.FormattedValue) for v in node.values):
        return
    seg = _segment(src, node)
    body = seg.lstrip("rRfFbBuU")
    quote = body[:3] if body[:3] in ('"""', "'''") else body[:1]
    if quote not in ('"', "'", '"""', "'''"):
        raise Decline("f-string layout")
    if "\\" in seg or "#" in seg or "\n" in seg or "\r" in seg or seg.count(quote) != 2 or not seg.endswith(quote):
        raise Decline("f-string may need 3.12")


def _string_lines(lines: Sequence[str], first: int, last: int) -> FrozenSet[int]:
    """Text lines of lines ``first..last`` that begin inside a string literal (= dedent.string_lines)."""
    code = "".join(lines[first - 1:last])
    out: Set[int] = set()
    fstarts: List[int] = []
    start_types = {getattr(tokenize, n) for n in ("FSTRING_START", "TSTRING_START") if hasattr(tokenize, n)}
    end_types = {getattr(tokenize, n) for n in ("FSTRING_END", "TSTRING_END") if hasattr(tokenize, n)}
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type == tokenize.STRING:
            s, e = tok.start[0], tok.end[0]
            if e > s:
                out.update(range(s + 1, e + 1))
        elif tok.type in start_types:
            fstarts.append(tok.start[0])
        elif tok.type in end_types:
            s, e = fstarts.pop(), tok.end[0]
            if e > s:
                out.update(range(s + 1, e + 1))
    shift = first - 1
    return frozenset(n + shift for n in out)
