"""Traces typed at the classic ``python`` prompt.

The classic REPL (3.12 and earlier; ``PYTHON_BASIC_REPL`` on 3.13+) compiles
each statement with the file name ``<stdin>`` and keeps no copy of its text,
so the frontend can't read the with-block a trace was entered from. This
module is the line recorder that gives it back:

* :func:`recorded_source` (registered in
  ``compiler.frontend.capture.REPL_RECORDERS``) rebuilds the statement a
  ``<stdin>`` frame runs from the readline history, where the REPL adds every
  line it reads. Candidate line ranges are checked by compiling them and
  finding the frame's own code object, so a trace in a function defined by an
  earlier statement is found too. What it finds is passed to
  ``register_repl_source`` and put in ``linecache`` under ``<stdin>``, so
  tracebacks and ``pdb`` show the lines;
* a prompt hook (``sys.ps1``) drops that ``linecache`` entry when the next
  statement starts, so later tracebacks never show a stale line.

Without readline (stdin not a terminal, ``python -i < file``) nothing is
recorded; entering a trace then fails with ``SourceNotFoundError``, which says
how to register the source by hand.
"""
import linecache
import sys
from typing import List, Optional

from compiler.frontend import capture

FILENAME = "<stdin>"
WINDOW = 2000  # history lines searched
_CONTINUATIONS = ("else", "elif", "except", "finally", ")", "]", "}")

def _history() -> List[str]:
    try:
        import readline
    except ImportError:
        return []
    n = readline.get_current_history_length()
    items = []
    for i in range(max(1, n - WINDOW + 1), n + 1):
        item = readline.get_history_item(i)
        if item is not None:
            items.append(item)
    return items


def _segments(lines: List[str]) -> List[int]:
    """Indices where a new top-level statement may start (column 0, not a continuation)."""
    starts = []
    for i, line in enumerate(lines):
        if not line.strip() or line[0].isspace():
            continue
        if line.lstrip().startswith(_CONTINUATIONS) and i:
            continue
        starts.append(i)
    return starts


def statement_for(frame, lines: Optional[List[str]] = None) -> Optional[str]:
    """The text, among the history ``lines``, that compiled to ``frame``'s code."""
    lines = _history() if lines is None else lines
    if not lines:
        return None
    starts = _segments(lines)
    ends = starts[1:] + [len(lines)]
    module_level = frame.f_code.co_name == "<module>"
    for k in range(len(starts) - 1, -1, -1):
        # A statement is one segment, or a few when a bracket closes at column 0.
        for span in range(1, 4):
            if k + span > len(starts):
                break
            end = ends[k + span - 1]
            if module_level and end != len(lines):
                continue  # the running statement is the last one entered
            text = "\n".join(lines[starts[k]:end]) + "\n"
            if capture.code_matches(text, frame):
                return text
        if module_level and len(lines) - starts[k] > 500:
            break
    return None


def recorded_source(frame) -> Optional[str]:
    """Recorder for ``capture.REPL_RECORDERS``: the statement ``frame`` runs, from readline."""
    if frame.f_code.co_filename != FILENAME:
        return None
    text = statement_for(frame)
    if text is None:
        return None
    capture.register_repl_source(text)
    del capture.REPL_HISTORY[:-50]  # keep the recent ones
    linecache.cache[FILENAME] = (len(text), None, text.splitlines(True), FILENAME)  # for pdb
    return text


class _Prompt(str):
    """``sys.ps1``: the REPL asks for ``str(sys.ps1)`` before each statement."""

    def __str__(self) -> str:
        linecache.cache.pop(FILENAME, None)  # the next statement is a new <stdin>
        return str.__str__(self)


def interactive() -> bool:
    return hasattr(sys, "ps1") or bool(getattr(sys.flags, "interactive", 0))


def install() -> None:
    """Register the recorder; in an interactive session also hook the prompt."""
    if recorded_source not in capture.REPL_RECORDERS:
        capture.REPL_RECORDERS.append(recorded_source)
    ps1 = getattr(sys, "ps1", None)
    if isinstance(ps1, str) and not isinstance(ps1, _Prompt):
        sys.ps1 = _Prompt(ps1)
