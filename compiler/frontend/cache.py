"""Per-call-site cache of lowered programs.

A call site is identified by the code object and the instruction offset
(``f_lasti``) of the frame entering the tracing context: code objects are
immutable, so the same site always lowers to the same program. The cache is a
bounded LRU (notebooks create new code objects each time a cell runs). Errors
are not cached.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Hashable

from ..ir.nodes import Program
from .capture import CapturedSource, source_for_frame
from .fastpath import lower

MAX_ENTRIES = 1024

_cache: "OrderedDict[Hashable, Program]" = OrderedDict()
_lock = threading.Lock()


def _get(key: Hashable):
    with _lock:
        program = _cache.get(key)
        if program is not None:
            _cache.move_to_end(key)
        return program


def _put(key: Hashable, program: Program) -> None:
    with _lock:
        _cache[key] = program
        _cache.move_to_end(key)
        while len(_cache) > MAX_ENTRIES:
            _cache.popitem(last=False)


def lower_cached(key: Hashable, make_source: Callable[[], CapturedSource], lineno: int) -> Program:
    """Return the cached program for ``key``, lowering ``make_source()`` at ``lineno`` on a miss."""
    program = _get(key)
    if program is None:
        src = make_source()
        program = lower(src.text, src.filename, lineno, first_line=src.first_line)
        _put(key, program)
    return program


def program_for_frame(frame) -> Program:
    """The program of the with-block whose header ``frame`` is executing."""
    return lower_cached((frame.f_code, frame.f_lasti), lambda: source_for_frame(frame), frame.f_lineno)


def clear() -> None:
    """Forget every cached program."""
    with _lock:
        _cache.clear()


def size() -> int:
    return len(_cache)
