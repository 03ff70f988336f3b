"""Find the ``with`` statement whose header covers a line.

At ``Tracer.__enter__`` the frame's ``f_lineno`` is a line of the
with-statement's header: any line from the ``with`` keyword to the colon
(multi-line call arguments, several items, parenthesized items). The header of
a one-line body (``with x: a = 1``) is that single line.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import libcst as cst

from .errors import UnsupportedSyntaxError, WithBlockNotFoundError
from .parse import Region, parse_region, split_lines


@dataclass
class LocatedWith:
    """A with-statement found in a text (all lines in text numbering, 1-based)."""

    node: cst.With
    region: Region
    lines: List[str]
    header: Tuple[int, int]


def statement_start(region: Region, stmt: cst.CSTNode) -> Tuple[int, int]:
    """(line, col) where a statement starts, its decorators included."""
    decorators = getattr(stmt, "decorators", None)
    return region.start(decorators[0] if decorators else stmt)


def header_range(region: Region, node: cst.With) -> Tuple[int, int]:
    """Lines (first, last) of a with-header: the ``with`` keyword .. the colon."""
    first = region.start(node)[0]
    body = node.body
    if isinstance(body, cst.IndentedBlock):
        stmt = body.body[0]
        # The colon line is followed by the first statement's leading
        # comment/blank lines (one EmptyLine each), then the statement.
        last = statement_start(region, stmt)[0] - len(stmt.leading_lines) - 1
    else:  # SimpleStatementSuite: starts right after the colon
        last = region.start(body)[0]
    return first, max(first, last)


def locate_with(text: str, lineno: int, *, first_line: int = 1, filename: str = "<unknown>") -> LocatedWith:
    """Return the with-statement of ``text`` whose header covers user line ``lineno``.

    ``text``'s first line is user line ``first_line``. Raises
    WithBlockNotFoundError (with context lines) or UnsupportedSyntaxError.
    """
    lines = split_lines(text)
    line = lineno - first_line + 1
    region = parse_region(text, line) if 1 <= line <= len(lines) else None
    found = _find(region, line) if region is not None else None
    if found is None:
        reason = "" if region is not None else " (the code around it does not parse)"
        raise WithBlockNotFoundError(_not_found_message(lines, lineno, first_line, filename, reason))
    assert region is not None
    if found.asynchronous is not None:
        raise UnsupportedSyntaxError(
            "%s:%d: 'async with' cannot be used as a tracing context; use a plain 'with'."
            % (filename, lineno)
        )
    return LocatedWith(found, region, lines, header_range(region, found))


def _find(region: Region, line: int) -> Optional[cst.With]:
    best = None
    best_first = -1
    for node in region.positions:
        if isinstance(node, cst.With):
            first, last = header_range(region, node)
            if first <= line <= last and first > best_first:
                best, best_first = node, first
    return best


def _not_found_message(lines: List[str], lineno: int, first_line: int, filename: str, reason: str) -> str:
    out = ["With block not found at line %d%s" % (lineno, reason), "File: %s" % filename, "We looked here:", ""]
    width = len(str(lineno + 2))
    for user_line in range(lineno - 2, lineno + 3):
        i = user_line - first_line
        if 0 <= i < len(lines):
            text = lines[i].rstrip("\r\n")
            mark = "    <--- HERE" if user_line == lineno else ""
            out.append("  %*d | %s%s" % (width, user_line, text, mark))
    if len(out) == 4:
        out.append("  (line %d is outside the %d lines of source found)" % (lineno, len(lines)))
    return "\n".join(out)
