"""Per-call-site cache of lowered programs.

A call site is identified by the code object and the instruction offset
(``f_lasti``) of the frame entering the tracing context: code objects are
immutable, so the same site always lowers to the same program. The cache is a
bounded LRU (notebooks create new code objects each time a cell runs). Errors
are not cached.
"""
from __future__ import annotations

from typing import Callable, Hashable

from ..ir.nodes import Program
from ..lru import BoundedLRU
from .capture import CapturedSource, source_for_frame
from .fastpath import lower

MAX_ENTRIES = 1024

_cache: "BoundedLRU[Program]" = BoundedLRU(MAX_ENTRIES)


def lower_cached(key: Hashable, make_source: Callable[[], CapturedSource], lineno: int) -> Program:
    """Return the cached program for ``key``, lowering ``make_source()`` at ``lineno`` on a miss."""
    program = _cache.get(key)
    if program is None:
        src = make_source()
        program = lower(src.text, src.filename, lineno, first_line=src.first_line)
        _cache.put(key, program)
    return program


def program_for_frame(frame) -> Program:
    """The program of the with-block whose header ``frame`` is executing."""
    return lower_cached((frame.f_code, frame.f_lasti), lambda: source_for_frame(frame), frame.f_lineno)


def clear() -> None:
    """Forget every cached program."""
    _cache.clear()


def size() -> int:
    return len(_cache)
