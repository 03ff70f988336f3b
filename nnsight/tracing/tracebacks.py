"""Exceptions from traced code, shown against the user's own source.

IR units are compiled with the user's file name, line and column numbers
(``runtime/builder.py``), so the frames that ran user code already read right.
What is left to do when an exception leaves a tracing context is to rebuild
its traceback as if deferred execution never happened:

* **relay frames go**: an intervention's exception is raised in its worker
  (a greenlet, entered at ``Mediator._run``) and re-raised on the model side,
  so its traceback runs tracer -> model forward -> interleaver -> worker ->
  user code. Everything up to the last worker entry is the route the
  exception took back, not where it happened, and is dropped;
* **internal frames go**: frames in ``nnsight/``, ``runtime/``, ``compiler/``
  and ``greenlet`` are dropped (the model's and other libraries' frames that
  user code called stay);
* **deferred headers come back**: an invoke's body runs after the trace body
  that declared it has finished, so its traceback lacks the
  ``with tracer.invoke(...):`` line; a frame for that line is put back;
* **no "During handling of the above exception"**: contexts that are
  nnsight's own control flow (the skipped with-body, cancellations) are
  suppressed; a user's own exception chain stays.

The exception object itself is kept (``except IndexError`` still catches it).
One frame can't be removed this way: the tracer's ``__exit__``, which raises
the exception into the user's frame. :func:`install` wraps ``sys.excepthook``
and IPython's ``showtraceback`` to drop it (and any other internal frame) from
the tracebacks of exceptions that went through :func:`clean`.

``CONFIG.APP.DEBUG = True`` (or ``python -d``, or ``NNSIGHT_DEBUG=1``) turns all
of this off: every frame is shown.
"""
import ast
import linecache
import os
import sys
import types
from typing import Dict, Iterator, List, Optional, Tuple

from runtime import registries

MARK = "__nnsight_traceback__"  # set on exceptions that went through clean()
WORKER_CONTEXT = "__nnsight_context__"  # the implicit context an exception had in its worker
_NONE = object()
_HEADER_NAME = "__nnsight_with_header__"

_dirs: Optional[Tuple[str, ...]] = None
_boundaries: set = set()  # code objects where an intervention worker starts running user code
# Stand-in frames for with-headers, by (file, line, name, text), at most HEADER_BOUND; the two
# maps are cleared together, so an id in _header_ids always belongs to a code in _header_codes.
_header_codes: Dict[Tuple[str, int, str], types.CodeType] = {}
_header_ids: Dict[int, Optional[str]] = {}  # id() of the codes in _header_codes -> their line
HEADER_BOUND = 1024


def debug() -> bool:
    from ..config import CONFIG

    return bool(CONFIG.APP.DEBUG)


# ----------------------------------------------------------------- classifying frames

def _package_dir(module) -> str:
    return os.path.dirname(os.path.abspath(module.__file__)) + os.sep


def internal_dirs() -> Tuple[str, ...]:
    """Directories whose frames are nnsight's machinery."""
    global _dirs
    if _dirs is None:
        import compiler
        import greenlet
        import nnsight
        import runtime

        _dirs = tuple(_package_dir(m) for m in (nnsight, runtime, compiler, greenlet))
    return _dirs


def is_internal(filename: str) -> bool:
    if not filename or filename.startswith("<"):
        return False
    f = os.path.abspath(filename)
    return f.startswith(internal_dirs()) or (os.sep + "greenlet" + os.sep) in f


def add_boundary(code: types.CodeType) -> None:
    """Declare ``code`` as a worker entry: frames before it in a traceback are relay frames."""
    _boundaries.add(code)


def _ensure_boundaries() -> None:
    if not _boundaries:
        from runtime.mediator import Mediator

        add_boundary(Mediator._run.__code__)


def _internal_control(exc: BaseException) -> bool:
    """Exceptions nnsight uses for control flow (never a user's error)."""
    from runtime.errors import Cancelation, EarlyStopException
    from runtime.skip import SkipBody

    return isinstance(exc, (SkipBody, Cancelation, EarlyStopException))


# ------------------------------------------------------------------------ clean()

def clean(error: BaseException) -> BaseException:
    """Rebuild ``error``'s traceback against the user's source (in place; returns ``error``).

    Meant for ``raise clean(error)`` where a tracing context hands an exception
    back to user code.
    """
    _install_lazily()
    full = debug()  # DEBUG: keep every frame, and leave the display hooks out of it (no mark)
    for exc in _chain(error):
        own = getattr(exc, "__dict__", {}).pop(WORKER_CONTEXT, _NONE)
        if own is not _NONE and (exc.__context__ is None or _internal_control(exc.__context__)):
            exc.__context__ = own  # what the worker had, before the model side re-raised it
        context = exc.__context__
        if context is not None and _internal_control(context):
            exc.__suppress_context__ = True
        if not full:
            try:
                setattr(exc, MARK, True)
            except Exception:
                pass
            exc.__traceback__ = rebuild(exc.__traceback__)
    return error


def _chain(error: BaseException) -> Iterator[BaseException]:
    """Each exception of ``error``'s chain once: causes, and contexts that are shown. An
    exception's links are read after the caller has handled it (``clean`` may rewrite them)."""
    seen = set()
    todo = [error]
    while todo:
        exc = todo.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        yield exc
        todo.append(exc.__cause__)
        if not exc.__suppress_context__:
            todo.append(exc.__context__)


def _entries(tb) -> List[types.TracebackType]:
    out = []
    while tb is not None:
        out.append(tb)
        tb = tb.tb_next
    return out


def rebuild(tb: Optional[types.TracebackType]) -> Optional[types.TracebackType]:
    """The traceback without relay and internal frames, with deferred with-headers put back."""
    _ensure_boundaries()
    entries = _entries(tb)
    for i in range(len(entries) - 1, -1, -1):
        if entries[i].tb_frame.f_code in _boundaries:
            entries = entries[i + 1:]
            break
    kept: List[Tuple[object, int, int]] = []  # (frame, lasti, lineno)
    for entry in entries:
        frame = entry.tb_frame
        code = frame.f_code
        if id(code) in _header_ids:
            # A header put back by an inner clean(): keep unless the real line is already there.
            if kept and _same_line(kept[-1], code.co_filename, entry.tb_lineno):
                continue
            kept.append((frame, entry.tb_lasti, entry.tb_lineno))
            continue
        if is_internal(code.co_filename):
            continue
        header = _missing_header(frame, kept)
        if header is not None:
            kept.append(header)
        kept.append((frame, entry.tb_lasti, entry.tb_lineno))
    new = None
    for frame, lasti, lineno in reversed(kept):
        new = types.TracebackType(new, frame, lasti, lineno)
    return new


def _same_line(entry, filename: str, lineno: int) -> bool:
    frame, _, line = entry
    return frame.f_code.co_filename == filename and line == lineno


def _missing_header(frame, kept) -> Optional[Tuple[object, int, int]]:
    """A frame for the with-header of a deferred unit body, if the traceback lacks it."""
    from runtime import claims

    owner = claims.compiled_unit_of(frame)
    if owner is None or owner.unit.parent is None:
        return None
    first, last = owner.unit.header
    filename = frame.f_code.co_filename
    if kept:
        prev, _, line = kept[-1]
        if prev.f_code.co_filename == filename and first <= line <= last:
            return None
    parent = owner.program.program.units[owner.unit.parent]
    lines = parent.source.splitlines()
    i = first - parent.loc.line
    text = " " * parent.loc.col + lines[i] if 0 <= i < len(lines) else None
    try:
        return header_frame(filename, first, frame.f_code.co_name, text)
    except Exception:  # never let the traceback machinery hide the real error
        return None


def header_frame(filename: str, lineno: int, name: str, text: Optional[str] = None) -> Tuple[object, int, int]:
    """``(frame, lasti, lineno)`` of a stand-in frame showing ``filename:lineno`` in ``name``.

    The frame runs a one-statement code object placed on that line (spanning
    the whole line, so no carets are drawn under part of it). ``text`` is the
    line, when known (otherwise read from ``linecache``).
    """
    key = (filename, lineno, name, text)
    code = _header_codes.get(key)
    if code is None:
        if text is None:
            text = linecache.getline(filename, lineno)
        text = text.rstrip()
        start = len(text) - len(text.lstrip())
        end = max(len(text.encode("utf-8")), start + 1)
        raise_ = ast.Raise(exc=ast.Name(id=_HEADER_NAME, ctx=ast.Load()), cause=None)
        for node in (raise_, raise_.exc):
            node.lineno = node.end_lineno = lineno
            node.col_offset, node.end_col_offset = start, end
        module = compile(ast.Module(body=[raise_], type_ignores=[]), filename, "exec", dont_inherit=True)
        replace = {"co_name": name}
        if sys.version_info >= (3, 11):
            replace["co_qualname"] = name
        code = module.replace(**replace)
        if len(_header_codes) >= HEADER_BOUND:
            _header_codes.clear()
            _header_ids.clear()
        _header_codes[key] = code
        _header_ids[id(code)] = text
    try:
        exec(code, {_HEADER_NAME: _Header, "__builtins__": {}})
    except _Header as marker:
        tb = marker.__traceback__.tb_next
        return tb.tb_frame, tb.tb_lasti, tb.tb_lineno
    raise AssertionError("unreachable")


class _Header(Exception):
    pass


# ---------------------------------------------------------------- display hooks

def _marked(exc) -> bool:
    return exc is not None and getattr(exc, MARK, False) is True


def for_display(exc: BaseException, tb=None):
    """Drop internal frames (the tracer's own ``__exit__``) from a cleaned exception chain.

    Returns the traceback to show for ``exc`` (``tb`` if given, else its own).
    """
    if debug():
        return tb if tb is not None else exc.__traceback__
    own = tb is None or tb is exc.__traceback__
    for e in _chain(exc):
        if _marked(e):
            e.__traceback__ = _drop_internal(e.__traceback__)
    if own:
        return exc.__traceback__
    return _drop_internal(tb) if _marked(exc) else tb


def _drop_internal(tb):
    kept = [e for e in _entries(tb) if not is_internal(e.tb_frame.f_code.co_filename)]
    new = None
    for e in reversed(kept):
        new = types.TracebackType(new, e.tb_frame, e.tb_lasti, e.tb_lineno)
    return new


def _excepthook(etype, value, tb):
    previous = _excepthook.previous
    try:
        if _chain_marked(value):
            tb = for_display(value, tb)
            if previous is sys.__excepthook__:
                # The builtin hook of 3.12 and earlier reads source lines from disk only;
                # the traceback module also finds <string>, <stdin> and exec'd sources.
                print_exception(etype, value, tb, file=sys.stderr)
                return
    except Exception:
        pass
    previous(etype, value, tb)


_excepthook.previous = sys.__excepthook__  # type: ignore[attr-defined]


def print_exception(etype, value, tb, file=None) -> None:
    """``traceback.print_exception``, with the lines of ``<stdin>`` frames filled in."""
    import traceback

    file = sys.stderr if file is None else file
    te = traceback.TracebackException(etype, value, tb, lookup_lines=False, compact=True)
    try:
        _fill_stdin_lines(te, value, tb)
    except Exception:
        pass
    for chunk in te.format(chain=True):
        file.write(chunk)


def _fill_stdin_lines(te, exc, tb) -> None:
    """Every classic-REPL statement is ``<stdin>``: ``linecache`` can hold only one of them.

    The line of each ``<stdin>`` frame is found from the frame itself instead:
    a unit's source, a with-header stand-in, or the recorded REPL statement
    that compiles to the frame's code.
    """
    seen = set()
    while te is not None and exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        for summary, entry in zip(te.stack, _entries(tb)):
            if summary.filename == "<stdin>" and getattr(summary, "_line", "") is None:
                line = _stdin_line(entry.tb_frame, entry.tb_lineno)
                # "" rather than a line of another statement that shares the name.
                summary._line = "" if line is None else line.rstrip("\n") + "\n"
        if exc.__cause__ is not None:
            te, exc = te.__cause__, exc.__cause__
        elif exc.__context__ is not None and not exc.__suppress_context__:
            te, exc = te.__context__, exc.__context__
        else:
            break
        tb = exc.__traceback__


def _stdin_line(frame, lineno: int) -> Optional[str]:
    from compiler.frontend import capture
    from runtime import claims

    code = frame.f_code
    if id(code) in _header_ids:  # (a code in _header_ids is alive in _header_codes: its id is its own)
        return _header_ids[id(code)]
    owner = claims.compiled_unit_of(frame)
    if owner is not None:
        unit = owner.unit
        lines = unit.source.splitlines()
        i = lineno - unit.loc.line
        return " " * unit.loc.col + lines[i] if 0 <= i < len(lines) else None
    chunks = list(reversed(capture.REPL_HISTORY))
    from .. import repl

    try:
        found = repl.statement_for(frame)  # e.g. the statement that called a traced function
    except Exception:
        found = None
    for chunk in ([found] if found else []) + chunks:
        lines = chunk.splitlines()
        if 1 <= lineno <= len(lines) and capture.code_matches(chunk, frame):
            return lines[lineno - 1]
    return None


def _chain_marked(value) -> bool:
    return any(_marked(e) for e in _chain(value))


def _install_excepthook() -> None:
    if sys.excepthook is _excepthook:
        return
    _excepthook.previous = sys.excepthook  # type: ignore[attr-defined]
    sys.excepthook = _excepthook


def install_ipython(shell) -> bool:
    """Show cleaned tracebacks in an IPython shell (terminal, kernel, or embedded)."""
    if shell is None or getattr(shell, "_nnsight_showtraceback", False):
        return False
    original = shell.showtraceback

    def showtraceback(exc_tuple=None, *args, **kwargs):
        try:
            etype, value, tb = shell._get_exc_info(exc_tuple)
            if _chain_marked(value):
                exc_tuple = (etype, value, for_display(value, tb))
        except Exception:
            pass
        return original(exc_tuple, *args, **kwargs)

    shell.showtraceback = showtraceback
    shell._nnsight_showtraceback = True
    return True


def _current_ipython():
    mod = sys.modules.get("IPython")
    if mod is None:
        return None
    try:
        return mod.get_ipython()
    except Exception:
        return None


_installed = [False]


def install() -> None:
    """Install the display hooks (``sys.excepthook``; IPython's shell if one is running)."""
    _installed[0] = True
    _install_excepthook()
    install_ipython(_current_ipython())


def _install_lazily() -> None:
    # A shell started after nnsight was imported (IPython.embed(), a kernel) gets the hook now.
    if _installed[0]:
        shell = _current_ipython()
        if shell is not None and not getattr(shell, "_nnsight_showtraceback", False):
            install_ipython(shell)


# ------------------------------------------------------------ sources of IR programs



def register_program_sources(program) -> List[str]:
    """Make the source of a program from elsewhere showable in tracebacks and ``pdb``.

    Units and captured definitions are compiled with the file name and line
    numbers recorded in the IR. When that file does not exist here, its lines
    are registered in ``linecache`` (at the recorded line numbers) so
    tracebacks still show the user's code. Returns the file names registered.
    """
    by_file: Dict[str, Dict[int, str]] = {}
    pieces = [(u.source, u.loc) for u in program.units]
    pieces += [(d.source, d.loc) for d in getattr(program, "definitions", ())]
    for source, loc in pieces:
        lines = by_file.setdefault(loc.file, {})
        for i, line in enumerate(source.splitlines()):
            lines.setdefault(loc.line + i, " " * loc.col + line + "\n" if line else "\n")
    registered = []
    for filename, lines in by_file.items():
        if not filename or not lines:
            continue
        # a name registered here before had no file then (a server sees the same client files at
        # every request: the system call is saved)
        if not registries.made_lines(filename) and os.path.exists(filename):
            continue
        entry = linecache.cache.get(filename)
        if entry is not None and len(entry) == 4 and not registries.made_lines(filename):
            continue  # someone else's source for that name (a notebook cell, exec'd code)
        old = list(entry[2]) if entry is not None and len(entry) == 4 else []
        size = max(max(lines), len(old))
        text = [lines.get(n, old[n - 1] if n <= len(old) else "\n") for n in range(1, size + 1)]
        registries.remember_lines(filename, (sum(map(len, text)), None, text, filename))
        registered.append(filename)
    return registered


registries.track("nnsight.tracing.tracebacks.header_codes", lambda: len(_header_codes), HEADER_BOUND)
registries.track("nnsight.tracing.tracebacks.boundaries", lambda: len(_boundaries), 64)  # library code only
