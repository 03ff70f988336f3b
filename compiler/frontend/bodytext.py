"""Cutting a with-body out of the user's text: the dedent rule both lowering paths share.

The body runs from its first statement (at column ``col``) to the last line of
its last statement. The first line is cut at ``col``; for an indented block the
body's indent is removed from every later line that starts with it, blank lines
become empty, and other lines (continuations that may start less indented) stay
as they are. Lines in ``verbatim`` (inside multi-line strings) are kept byte
for byte. A one-line body (``with x: a = 1``) is only cut at ``col``.
Parser-free: :mod:`compiler.frontend.dedent` (libcst) and
:mod:`compiler.frontend.fastpath` (``ast``) find ``first/last/col`` their own way.
"""
from __future__ import annotations

from typing import FrozenSet, List, Sequence, Tuple


def strip_eol(line: str) -> str:
    return line.rstrip("\r\n")


def cut_body(lines: Sequence[str], first: int, last: int, col: int, indented: bool,
             verbatim: FrozenSet[int]) -> Tuple[str, int, int]:
    """``(source, first, col)`` of the body spanning text lines ``first..last`` (1-based)."""
    out: List[str] = [strip_eol(lines[first - 1])[col:]]
    if indented:
        indent = strip_eol(lines[first - 1])[:col]
        for n in range(first + 1, last + 1):
            text = strip_eol(lines[n - 1])
            if n not in verbatim:
                if text.startswith(indent):
                    text = text[len(indent):]
                elif not text.strip():
                    text = ""
            out.append(text)
    else:
        out.extend(strip_eol(lines[n - 1]) for n in range(first + 1, last + 1))
    return "\n".join(out) + "\n", first, col
