"""Pass: parenthesized context managers (3.10 syntax) -> the 3.9 multi-item form.

::

    with (                          with  \\
        open(a) as f,  # note  ->       open(a) as f, \\
        open(b) as g,                   open(b) as g  \\
    ):                              :

``with A as a, B as b:`` is defined by the language as the nested statements
``with A as a:`` / ``with B as b:``, and every supported Python accepts it, so
the lowered code means exactly what the original meant. The rewrite is done
in place on the text, line for line and column for column: the parentheses
and a trailing comma become spaces, each header line but the last gets a
backslash continuation, and comments inside the header (which cannot precede
a backslash) are dropped. Every statement keeps its line and column, so unit
headers, tracebacks and the runtime's claim of nested tracing contexts (by
header line) are unaffected.

A header the rewrite cannot keep exact is left alone (its feature stays in
the program header): one spanning a multi-line string literal, or source
libcst cannot parse.
"""
from __future__ import annotations

from typing import Dict, List, Set, Tuple

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from ..frontend.features import _parenthesized_with
from ..frontend.parse import parse_module

FEATURE = "parenthesized context managers"


def lower_parenthesized_with(source: str) -> Tuple[str, int]:
    """``(lowered source, number of parenthesized headers left as they were)``."""
    if "(" not in source or "with" not in source:
        return source, 0
    try:
        wrapper = MetadataWrapper(parse_module(source), unsafe_skip_copy=True)
        positions = wrapper.resolve(PositionProvider)
    except Exception:  # not parseable here: leave it (the feature stays reported)
        return source, 0
    withs = [n for n in positions if isinstance(n, cst.With) and _parenthesized_with(n)]
    if not withs:
        return source, 0
    lines = source.splitlines(True)
    chars: Dict[int, List[str]] = {}  # 0-based line -> editable characters
    blank: Dict[int, Set[int]] = {}  # 0-based line -> columns set to a space
    cut: Dict[int, int] = {}  # 0-based line -> column where a dropped comment starts
    joined: Set[int] = set()  # 0-based lines that get a backslash continuation
    strings = [p for n, p in positions.items() if _is_string(n) and p.end.line > p.start.line]
    comments = [p for n, p in positions.items() if isinstance(n, cst.Comment)]
    left = 0
    for node in withs:
        lpar = positions[node.lpar].start
        rpar = positions[node.rpar].end
        first, last = lpar.line, rpar.line  # 1-based
        if any(s.start.line <= last and s.end.line >= first for s in strings):
            left += 1
            continue
        edits = [(lpar.line, lpar.column, "("), (rpar.line, rpar.column - 1, ")")]
        comma = node.items[-1].comma
        if isinstance(comma, cst.Comma):
            start = positions[comma].start
            line, col = _find_comma(lines, start.line, start.column)
            edits.append((line, col, ","))
        if not all(lines[line - 1][col: col + 1] == ch for line, col, ch in edits):
            left += 1  # positions are not what they should be: do not guess
            continue
        for line, col, _ in edits:
            blank.setdefault(line - 1, set()).add(col)
        for c in comments:
            if first <= c.start.line < last and (c.start.line, c.start.column) > (lpar.line, lpar.column):
                cut[c.start.line - 1] = min(cut.get(c.start.line - 1, c.start.column), c.start.column)
        joined.update(range(first - 1, last - 1))
    for i in set(blank) | set(cut) | joined:
        text, eol = _split_eol(lines[i])
        chars[i] = list(text)
        for col in blank.get(i, ()):
            chars[i][col] = " "
        if i in cut:
            del chars[i][cut[i]:]
        text = "".join(chars[i])
        if i in joined:
            text = text.rstrip()
            if not text.endswith("\\"):
                text = text + " \\" if text else "\\"
        lines[i] = text + eol
    return "".join(lines), left


def _is_string(node: cst.CSTNode) -> bool:
    name = type(node).__name__
    return name.endswith("String") and name != "ConcatenatedString"


def _split_eol(line: str) -> Tuple[str, str]:
    body = line.rstrip("\r\n")
    return body, line[len(body):]


def _find_comma(lines: List[str], line: int, col: int) -> Tuple[int, int]:
    """Position of the first ``,`` at or after (line, col), skipping whitespace and comments."""
    while line <= len(lines):
        text = lines[line - 1]
        while col < len(text):
            ch = text[col]
            if ch == ",":
                return line, col
            if ch == "#":
                break
            col += 1
        line, col = line + 1, 0
    return 0, 0
