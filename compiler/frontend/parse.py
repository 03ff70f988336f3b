"""Parse the smallest region of a source text that contains a given line.

Positions of a whole file are expensive to compute with libcst, and a text may
not parse as a whole (a notebook cell with magics, a file with unrelated
syntax errors). :func:`parse_region` therefore parses only the top-level
statement containing the line:

1. ``ast.parse`` (fast, C) finds the exact extent of that statement when the
   running interpreter accepts the whole text;
2. otherwise libcst parses the whole text;
3. otherwise candidate regions between column-0 lines around the target line
   are tried, nearest first, growing outwards.

Only the chosen region is parsed with libcst; its positions are mapped back to
the numbering of the text by :attr:`Region.offset`.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

# Newest grammar libcst knows; its native parser accepts every older construct.
PARSER_CONFIG = cst.PartialParserConfig(python_version="3.13")

_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")

# Column-0 lines that continue the previous statement rather than start one.
_CONTINUATION = re.compile(r"(else|elif|except|finally)\b")

_MAX_ATTEMPTS = 40


def split_lines(text: str) -> List[str]:
    """Split like the Python tokenizer (only \\n, \\r\\n, \\r end lines); keep the ends."""
    return _LINE.findall(text)


@dataclass
class Region:
    """A parsed region: text line ``l`` is region line ``l - offset``."""

    module: cst.Module
    positions: Mapping[cst.CSTNode, Any]
    offset: int

    def start(self, node: cst.CSTNode) -> Tuple[int, int]:
        """(line, col) of the node's first character, in text numbering."""
        p = self.positions[node].start
        return p.line + self.offset, p.column

    def end(self, node: cst.CSTNode) -> Tuple[int, int]:
        """(line, col) just past the node's last character, in text numbering."""
        p = self.positions[node].end
        return p.line + self.offset, p.column


def parse_module(code: str) -> cst.Module:
    return cst.parse_module(code, config=PARSER_CONFIG)


def parse_region(text: str, line: int) -> Optional[Region]:
    """Parse the top-level statement of ``text`` containing ``line`` (1-based).

    Returns None when no region around the line parses.
    """
    lines = split_lines(text)
    span = _ast_span(text, line)
    if span is not None:
        region = _try(lines, *span)
        if region is not None:
            return region
    region = _try(lines, 1, len(lines))
    if region is not None:
        return region
    attempts = 0
    for start in _starts(lines, line):
        for end in _ends(lines, line):
            attempts += 1
            if attempts > _MAX_ATTEMPTS:
                return None
            region = _try(lines, start, end)
            if region is not None:
                return region
    return None


def _try(lines: Sequence[str], start: int, end: int) -> Optional[Region]:
    code = "".join(lines[start - 1:end])
    try:
        module = parse_module(code)
    except Exception:  # ParserSyntaxError, or anything the native parser raises
        return None
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    return Region(wrapper.module, wrapper.resolve(PositionProvider), start - 1)


def _ast_span(text: str, line: int) -> Optional[Tuple[int, int]]:
    """Lines (first, last) of the top-level statement containing ``line``."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    for stmt in tree.body:
        first = min([stmt.lineno] + [d.lineno for d in getattr(stmt, "decorator_list", ())])
        last = getattr(stmt, "end_lineno", None) or stmt.lineno
        if first <= line <= last:
            return first, last
    return None


def _is_boundary(s: str) -> bool:
    """Whether a line may start a top-level statement (heuristic)."""
    if not s or s[0] in " \t\r\n#)]}" or s[0] == "\x0c":
        return False
    return _CONTINUATION.match(s) is None


def _starts(lines: Sequence[str], line: int) -> List[int]:
    """Candidate first lines, nearest at or before ``line`` first."""
    out = [i for i in range(min(line, len(lines)), 0, -1) if _is_boundary(lines[i - 1])]
    # a decorated definition starts at its first decorator
    return [i for i in out if not (i > 1 and lines[i - 2].startswith("@"))] or [1]


def _ends(lines: Sequence[str], line: int) -> List[int]:
    """Candidate last lines, nearest at or after ``line`` first."""
    out = [i - 1 for i in range(line + 1, len(lines) + 1) if _is_boundary(lines[i - 1])]
    out.append(len(lines))
    return [e for e in out if e >= line]
