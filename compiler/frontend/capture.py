"""Recover the source text a frame is executing.

:func:`source_for_frame` tries, in order:

1. ``linecache``: an existing cache entry is used as-is (never re-validated
   with ``checkcache``: the capture must reflect what was executed). This
   covers regular files, ``exec(compile(src, "<name>", "exec"))`` with ``src``
   registered in ``linecache.cache``, IPython/Jupyter cells (IPython registers
   each cell) and the 3.13+ REPL (``<python-input-N>``). Missing entries are
   loaded with ``linecache.getlines(filename, frame.f_globals)``.
2. ``python -c CODE`` (filename ``<string>``): CODE from ``sys.orig_argv``
   (3.10+) or ``/proc/self/cmdline`` (3.9).
3. IPython: the last entry of the shell's input history.
4. The classic REPL (``<stdin>``): every statement shares that file name, so
   a cached text may belong to an earlier statement. Candidates are checked by
   compiling them and finding the frame's own code object (:func:`code_matches`):
   first what the recorders in :data:`REPL_RECORDERS` recover (nnsight's reads
   the readline history), then the chunks recorded with
   :func:`register_repl_source`, newest first; failing that, the latest chunk
   long enough to contain the line.

Otherwise :class:`~compiler.frontend.errors.SourceNotFoundError` says what was
tried and how to fix it.
"""
from __future__ import annotations

import __future__
import linecache
import os
import re
import sys
import types
from dataclasses import dataclass, field
from stat import S_ISREG
from typing import Any, Callable, List, Optional, Sequence, Tuple

from .errors import SourceNotFoundError

# Source chunks entered at the interactive prompt, oldest first (filled by the
# user API's REPL line recorder through register_repl_source).
REPL_HISTORY: List[str] = []

# Callables ``frame -> Optional[str]`` that recover the interactive statement a
# ``<stdin>`` frame runs (e.g. from the readline history); tried before
# REPL_HISTORY. A recorder should also pass what it finds to register_repl_source.
REPL_RECORDERS: List[Callable[[Any], Optional[str]]] = []

_REPL_FILENAMES = ("<stdin>",)


@dataclass(frozen=True)
class CapturedSource:
    """Source text in which the frame's ``f_lineno`` is numbered correctly.

    text: the full source text.
    filename: display filename (the frame's ``co_filename``).
    first_line: user line number of the first line of ``text`` (normally 1).
    origin: how the text was found (``"linecache"``, ``"argv"``,
      ``"ipython-history"``, ``"repl-history"``).
    lines: ``text`` split after each ``\\n`` (no ``\\r`` in it), when the capture made that
      split itself (a plain file it read); None otherwise.
    """

    text: str
    filename: str
    first_line: int = 1
    origin: str = "linecache"
    lines: Optional[Sequence[str]] = field(default=None, compare=False, repr=False)


def register_repl_source(text: str) -> None:
    """Record a source chunk entered at the interactive prompt."""
    if not text.endswith("\n"):
        text += "\n"
    REPL_HISTORY.append(text)


def source_for_frame(frame) -> CapturedSource:
    """Return the source text executed by ``frame`` (see module docstring)."""
    code = frame.f_code
    filename = code.co_filename
    lineno = frame.f_lineno
    tried: List[str] = []

    repl = filename in _REPL_FILENAMES
    if repl:
        text = _verified_repl_source(frame, tried)
        if text is not None:
            return CapturedSource(text, filename, origin="repl-history")

    lines, split = _from_linecache(frame, tried)
    if _covers(lines, lineno) and (not repl or code_matches("".join(lines), frame)):
        return CapturedSource("".join(lines), filename, lines=lines if split else None)

    if filename == "<string>":
        text = _command_line_source(tried)
        if text is not None and _covers(text.splitlines(), lineno):
            return CapturedSource(text, filename, origin="argv")

    text = _ipython_history(lineno, tried) if looks_like_cell(filename) else None
    if text is not None:
        return CapturedSource(text, filename, origin="ipython-history")

    if filename in _REPL_FILENAMES or filename.startswith("<python-input-"):
        tried.append("the REPL history recorded by register_repl_source (%d chunks)" % len(REPL_HISTORY))
        for chunk in reversed(REPL_HISTORY):
            if _covers(chunk.splitlines(), lineno):
                return CapturedSource(chunk, filename, origin="repl-history")

    raise SourceNotFoundError(_not_found_message(filename, lineno, tried))


def _verified_repl_source(frame, tried: List[str]) -> Optional[str]:
    """A REPL statement that compiles to ``frame``'s code: from the recorders, then REPL_HISTORY."""
    for recorder in list(REPL_RECORDERS):
        tried.append("REPL recorder %s" % getattr(recorder, "__qualname__", recorder))
        try:
            text = recorder(frame)
        except Exception:
            text = None
        if text and code_matches(text, frame):
            return text if text.endswith("\n") else text + "\n"
    for chunk in reversed(REPL_HISTORY):
        if _covers(chunk.splitlines(), frame.f_lineno) and code_matches(chunk, frame):
            return chunk
    return None


_FUTURE_FLAGS = 0
for _name in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _name).compiler_flag


def code_matches(text: str, frame) -> bool:
    """Does ``text`` compile (as a REPL statement or a module) to ``frame``'s code object?

    Used where one file name is shared by several texts (``<stdin>``): the
    frame's code, or a function nested in it, must come out of ``text``
    (same name, first line and bytecode).
    """
    target = frame.f_code
    flags = target.co_flags & _FUTURE_FLAGS
    if not text.endswith("\n"):
        text += "\n"
    for mode in ("single", "exec"):
        try:
            code = compile(text, target.co_filename, mode, flags=flags, dont_inherit=True)
        except (SyntaxError, ValueError, OverflowError):
            continue
        if _contains_code(code, target):
            return True
    return False


def _contains_code(code, target) -> bool:
    if (code.co_name == target.co_name and code.co_firstlineno == target.co_firstlineno
            and code.co_code == target.co_code):
        return True
    return any(_contains_code(c, target) for c in code.co_consts if isinstance(c, types.CodeType))


def _covers(lines: Optional[Sequence[str]], lineno: int) -> bool:
    return bool(lines) and 1 <= lineno <= len(lines)  # type: ignore[arg-type]


def _from_linecache(frame, tried: List[str]) -> Tuple[Sequence[str], bool]:
    """``(lines, split here)``: the frame's file lines from ``linecache`` (read in if missing);
    ``split here`` when this module read the file and split it after each newline."""
    filename = frame.f_code.co_filename
    for key in (filename, frame.f_code):
        entry = linecache.cache.get(key)
        if entry is not None and len(entry) != 1:  # loaded entry: use as-is
            tried.append("linecache.cache[%r]" % (key if isinstance(key, str) else "<code>",))
            return entry[2], False
    tried.append("linecache.getlines(%r)" % filename)
    lines = _read_plain_file(filename)
    if lines is not None:
        return lines, True
    try:
        return linecache.getlines(filename, frame.f_globals), False
    except Exception:  # a broken __loader__ must not hide the real error
        return [], False


def _read_plain_file(filename: str) -> Optional[List[str]]:
    """What ``linecache.getlines`` gives for an absolute path to a plain UTF-8 file, stored in
    ``linecache`` the same way, without ``tokenize``'s encoding sniffing (a new call site's file
    is read on the cold path, so: one open, fstat and read). None for anything else (an encoding
    cookie, a BOM, not UTF-8, not a regular file): the caller then asks ``linecache``."""
    if not os.path.isabs(filename):
        return None
    try:
        fd = os.open(filename, _O_READ)
        try:
            stat = os.fstat(fd)
            if not S_ISREG(stat.st_mode):
                return None
            data = os.read(fd, stat.st_size + 1)
            if len(data) > stat.st_size:  # grew since the fstat: read to the end
                parts = [data]
                while parts[-1]:
                    parts.append(os.read(fd, 1 << 16))
                data = b"".join(parts)
        finally:
            os.close(fd)
        if data.startswith(b"\xef\xbb\xbf") or b"coding" in b"\n".join(data.split(b"\n", 2)[:2]):
            return None
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")  # universal newlines, as text mode reads
    lines = _AFTER_NEWLINE.findall(text)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    linecache.cache[filename] = (stat.st_size, stat.st_mtime, lines, filename)
    return lines


_O_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_AFTER_NEWLINE = re.compile(r"[^\n]*\n|[^\n]+")  # lines as readlines() splits them


def _command_line_source(tried: List[str]) -> Optional[str]:
    """The CODE of ``python -c CODE``, or None when not run that way."""
    argv = getattr(sys, "orig_argv", None)
    if argv:
        tried.append("sys.orig_argv")
    else:
        tried.append("/proc/self/cmdline")
        try:
            with open("/proc/self/cmdline", "rb") as f:
                raw = f.read()
        except OSError:
            return None
        argv = [a.decode("utf-8", "surrogateescape") for a in raw.split(b"\0")[:-1]]
    return command_from_argv(argv)


# Interpreter options that take a value in the next argument.
_OPTS_WITH_VALUE = frozenset("WX")


def command_from_argv(argv: Sequence[str]) -> Optional[str]:
    """Return CODE from an interpreter argv like ``[python, -X, dev, -c, CODE]``."""
    i = 1
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg == "-" or arg.startswith("--"):
            return None  # a script, stdin, or a long option: not -c
        letters = arg[1:]
        for j, ch in enumerate(letters):
            if ch == "c":
                rest = letters[j + 1:]
                if rest:
                    return rest
                return argv[i + 1] if i + 1 < len(argv) else None
            if ch == "m":
                return None
            if ch in _OPTS_WITH_VALUE:
                if not letters[j + 1:]:
                    i += 1  # value is the next argument
                break
        i += 1
    return None


def looks_like_cell(filename: str) -> bool:
    """Whether a filename is an IPython cell's (terminal shell or Jupyter kernel)."""
    return filename.startswith("<ipython-input-") or "ipykernel_" in filename


def _ipython_history(lineno: int, tried: List[str]) -> Optional[str]:
    mod = sys.modules.get("IPython")
    if mod is None:
        return None
    try:
        shell = mod.get_ipython()
    except Exception:
        shell = None
    if shell is None:
        return None
    tried.append("the IPython input history (In[-1])")
    try:
        history = shell.user_ns.get("In") or shell.history_manager.input_hist_raw
        text = history[-1] if history else None
    except Exception:
        return None
    if text and _covers(text.splitlines(), lineno):
        return text if text.endswith("\n") else text + "\n"
    return None


def _not_found_message(filename: str, lineno: int, tried: List[str]) -> str:
    return (
        "Could not find the source code of %s (line %d), needed to compile the "
        "with-block.\nLooked at: %s.\nFix: run the code from a .py file, or register "
        "its source before running it, e.g.\n"
        "    import linecache\n"
        "    linecache.cache[%r] = (len(src), None, src.splitlines(True), %r)"
        % (filename, lineno, "; ".join(tried) or "nothing", filename, filename)
    )
