"""Cut a with-body out of the user's text as a unit source.

Rules:

* The unit source spans the physical lines from the first body statement
  (decorators included) to the last line of the last body statement; leading
  comments of the body and its trailing comment-only lines are dropped, every
  line in between is kept, so unit line ``i`` is user line ``loc.line + i - 1``.
* Line endings become ``\\n``; the source ends with ``\\n``.
* Indented body: the body indent is the exact whitespace prefix of the first
  statement's line (``loc.col`` is its length). Each line that starts with that
  prefix loses it; other lines are kept as they are: they can only be comment
  or blank lines, or continuation lines inside brackets / after a backslash,
  where leading whitespace is insignificant.
* Lines that start inside a string literal (continuation lines of a
  triple-quoted or backslash-continued string) are kept byte for byte, so the
  string's value is unchanged. (Whoever re-indents a unit must skip them too:
  see :func:`indent_source`.)
* One-line body (``with x: a = 1; b = 2``): the first line is the header line
  cut at the first statement's column (``loc.col``); any continuation lines of
  that statement are kept as they are.
"""
from __future__ import annotations

from typing import FrozenSet, List, Sequence, Set, Tuple

import libcst as cst

from .bodytext import cut_body
from .locate import statement_start
from .parse import Region, parse_module


def _is_string(node: cst.CSTNode) -> bool:
    # SimpleString, FormattedString, and TemplatedString in newer libcst
    name = type(node).__name__
    return name.endswith("String") and name != "ConcatenatedString"


def string_lines(region: Region) -> FrozenSet[int]:
    """Text lines of the region that begin inside a string literal."""
    out: Set[int] = set()
    for node, rng in region.positions.items():
        if rng.end.line > rng.start.line and _is_string(node):
            out.update(range(rng.start.line + 1 + region.offset, rng.end.line + 1 + region.offset))
    return frozenset(out)


def body_source(
    region: Region, lines: Sequence[str], body: cst.BaseSuite, verbatim: FrozenSet[int]
) -> Tuple[str, int, int]:
    """Return ``(source, first_line, col)`` of a with-body (text numbering)."""
    stmts = body.body
    first, col = statement_start(region, stmts[0])
    last = region.end(stmts[-1])[0]
    return cut_body(lines, first, last, col, isinstance(body, cst.IndentedBlock), verbatim)


def indent_source(source: str, prefix: str) -> str:
    """Indent a unit source by ``prefix`` without touching lines inside strings."""
    module = parse_module(source)
    from libcst.metadata import MetadataWrapper, PositionProvider

    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    region = Region(wrapper.module, wrapper.resolve(PositionProvider), 0)
    verbatim = string_lines(region)
    lines = source.split("\n")
    return "\n".join(
        (prefix + text) if (text and (i + 1) not in verbatim) else text for i, text in enumerate(lines)
    )
