"""Skip the body of a top-level ``with`` block: the compiled program runs instead.

The body of a ``with`` statement can't be skipped by its context manager, so
on ``__enter__`` we install a local trace function on the caller's frame that
raises :class:`SkipBody` at the body's first line; ``__exit__`` catches it.
The trap removes itself before raising, so the with-statement's own cleanup
(which runs on the header's line) is not trapped again.
"""
import sys


class SkipBody(Exception):
    """Raised at the first line of a traced with-body to skip it (internal)."""


def _noop(frame, event, arg):
    return None


class Trap:
    """A one-shot trace function that skips one frame's with-body."""

    __slots__ = ("frame", "previous", "sprung")

    def __init__(self, frame) -> None:
        self.frame = frame
        self.previous = sys.gettrace()
        self.sprung = False
        sys.settrace(_noop)
        frame.f_trace_lines = True
        frame.f_trace = self

    def __call__(self, frame, event, arg):
        if frame is not self.frame:
            return None
        self.release()
        self.sprung = True
        raise SkipBody()

    def release(self) -> None:
        if self.frame is not None:
            self.frame.f_trace = None
            sys.settrace(self.previous)
            self.frame = None


def arm(frame) -> Trap:
    """Skip ``frame``'s with-body; :func:`disarm` (or the trap itself) undoes it."""
    return Trap(frame)


def disarm(frame, trap: Trap) -> None:
    trap.release()
