"""Errors of remote execution, and a server-side job error raised again on the client.

A job that raised on the server comes back as plain data (type, message, the
frames in the user's own code). :func:`job_error` turns it into an exception
of the same type when that type is a builtin or nnsight's own, otherwise a
:class:`RemoteJobError`, whose traceback shows the user's file:line as a local
run would.
"""
import builtins
import sys
from typing import Any, Dict, Optional


class RemoteError(Exception):
    """The server refused a request (``status``: the HTTP status, ``code``: its error code)."""

    def __init__(self, message: str, status: int = 0, code: str = "", hint: str = "",
                 data: Optional[Dict[str, Any]] = None) -> None:
        text = message + ("\n  hint: " + hint if hint else "")
        super().__init__(text)
        self.status = status
        self.code = code
        self.hint = hint
        self.data = data or {}


class RemoteJobError(RuntimeError):
    """A job failed on the server with an exception whose type does not exist on this client."""


# Modules whose exception types may be rebuilt on the client (only if already imported).
_TRUSTED = ("builtins", "nnsight", "runtime", "compiler", "torch")


def _exception_type(name: str) -> Optional[type]:
    module_name, _, qualname = name.rpartition(".")
    if module_name.split(".")[0] not in _TRUSTED:
        return None
    module = builtins if module_name == "builtins" else sys.modules.get(module_name)
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, type) and issubclass(obj, Exception) else None


def job_error(info: Dict[str, Any], job_id: str) -> BaseException:
    """The exception to raise for a failed job (its traceback: the user's frames on the server)."""
    name = str(info.get("type", "RemoteJobError"))
    message = str(info.get("message", ""))
    cls = _exception_type(name)
    error: Optional[BaseException] = None
    if cls is not None:
        try:
            error = cls(message)
        except Exception:
            error = None
    if error is None:
        error = RemoteJobError("%s: %s" % (name.rpartition(".")[2], message))
    hint = info.get("hint")
    notes = ["raised by remote job %s" % job_id] + (["hint: %s" % hint] if hint else [])
    if hasattr(error, "add_note"):
        for note in notes:
            error.add_note(note)
    frames = info.get("frames") or []
    return error.with_traceback(_traceback(frames))


def _traceback(frames: Any) -> Any:
    """A traceback whose entries are the user's ``file:line`` frames (as the server saw them)."""
    try:
        from ..tracing.tracebacks import header_frame
    except Exception:  # torch-free client: no rebuilt frames, the message and notes say it all
        return None
    import types

    tb = None
    for entry in reversed(frames):
        try:
            filename, lineno, name, text = entry
            frame, lasti, line = header_frame(str(filename), int(lineno), str(name), text or None)
        except Exception:
            continue
        tb = types.TracebackType(tb, frame, lasti, line)
    return tb
