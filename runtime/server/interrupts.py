"""Stopping a job's thread at its next Python step, and making sure no stop is left pending after.

``PyThreadState_SetAsyncExc`` raises an exception in another thread the next time that thread's
interpreter loop checks for pending work (a call, a backward jump). Clearing a pending one by
passing NULL is not harmless on CPython 3.11: it signals "work pending" to the interpreter and
nothing ever withdraws the signal, so from then on every thread of the process takes the slow path
at each check, and a thread with a trace function set (a local trace skipping its with-body, a
debugger) runs one instruction again and again, forever. So a runner never clears: it remembers
whether it sent a stop and, if it did, lets the stop land on purpose as an exception it catches.
"""
import ctypes
import threading
from typing import Optional


class _Drained(BaseException):
    """The stop a runner sends its own thread to take the place of a pending one (caught at once)."""


def send(thread_id: Optional[int], kind: type) -> None:
    """Raise ``kind`` in the thread ``thread_id`` at its next Python step."""
    if thread_id is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(kind))


def drain() -> None:
    """Make a stop that may be pending for this thread land here, now, and swallow it.

    Call only after a stop was sent (else it costs a stop for nothing), and with the sending side
    unable to send another one (its job cleared under the runner's lock).
    """
    try:
        send(threading.get_ident(), _Drained)  # replaces the pending one, if any
        for _ in range(1_000_000):  # it lands at the next check (a call's return, a backward jump)
            pass
    except _Drained:
        return
