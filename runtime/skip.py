"""Skip the body of a top-level ``with`` block: the compiled program runs instead.

The body of a ``with`` statement can't be skipped by its context manager, so
on ``__enter__`` we install a local trace function on the caller's frame that
raises :class:`SkipBody` at the body's first line; ``__exit__`` catches it.
"""
import sys


class SkipBody(Exception):
    """Raised at the first line of a traced with-body to skip it (internal)."""


def _raise_skip(frame, event, arg):
    raise SkipBody()


def _noop(frame, event, arg):
    return None


def arm(frame):
    """Skip ``frame``'s with-body; returns the state :func:`disarm` restores."""
    previous = sys.gettrace()
    sys.settrace(_noop)
    frame.f_trace_lines = True
    frame.f_trace = _raise_skip
    return previous


def disarm(frame, previous) -> None:
    frame.f_trace = None
    sys.settrace(previous)
