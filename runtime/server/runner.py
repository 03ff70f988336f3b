"""Job runners: run one request's bytes against a hosted model and return the result bytes.

:class:`JobRunner` is the interface the worker uses; :class:`InProcessRunner`
runs the job in the calling (worker) thread through the one accept path
(:mod:`runtime.accept`). An out-of-process runner (a job that can be killed
outright, with its own memory limit) implements the same interface.

A job is interrupted (wall-clock limit, cancel) by raising an exception in the
worker thread at the next Python bytecode (``PyThreadState_SetAsyncExc``): a
job stuck in one long native call (a huge matmul) stops when it returns.
"""
import ctypes
import threading
import traceback
from typing import Any, Callable, Dict, Optional

from runtime import accept

LogLine = Callable[[str], None]


class JobInterrupted(BaseException):
    """Raised inside a running job to stop it (not an ``Exception``: user code must not swallow it)."""

    reason = "interrupted"


class JobTimeout(JobInterrupted):
    reason = "timeout"


class JobCancelled(JobInterrupted):
    reason = "cancelled"


class JobFailed(Exception):
    """A job raised: ``info`` is :func:`describe`'s account of the error, sent to the client."""

    def __init__(self, info: Dict[str, Any]) -> None:
        super().__init__(info.get("message", ""))
        self.info = info


class JobRunner:
    """Runs jobs; one job at a time per runner."""

    def run(self, payload: bytes, model: Any, log: LogLine, time_limit_s: float) -> bytes:
        """The result bytes of ``payload`` run on ``model``.

        Raises :class:`JobFailed` for the job's own error, :class:`JobInterrupted` when stopped.
        """
        raise NotImplementedError

    def interrupt(self, kind: type) -> None:
        """Stop the running job with ``kind`` (a :class:`JobInterrupted` subclass), if any."""
        raise NotImplementedError


class InProcessRunner(JobRunner):
    """Runs a job in the calling thread, through :func:`runtime.accept.answer`."""

    def __init__(self, make_tracer: accept.MakeTracer) -> None:
        self.make_tracer = make_tracer
        self._lock = threading.Lock()
        self._thread: Optional[int] = None  # the thread running a job now

    def run(self, payload: bytes, model: Any, log: LogLine, time_limit_s: float) -> bytes:
        with self._lock:
            self._thread = threading.get_ident()
        timer = threading.Timer(time_limit_s, self.interrupt, (JobTimeout,))
        timer.daemon = True
        timer.start()
        files: set = set()
        try:
            with accept.accepted(payload, lambda key: model, log) as job:
                files = job.files()
                return accept.encode_saved(job, accept.run(job, self.make_tracer))
        except JobInterrupted:
            raise
        except BaseException as error:  # noqa: B902 - the user's error, reported to the client
            raise JobFailed(describe(error, files)) from error
        finally:
            timer.cancel()
            with self._lock:
                thread, self._thread = self._thread, None
                _set_async_exc(thread, None)  # an interrupt that arrived too late is dropped

    def interrupt(self, kind: type) -> None:
        with self._lock:
            if self._thread is not None:
                _set_async_exc(self._thread, kind)


def _set_async_exc(thread_id: Optional[int], kind: Optional[type]) -> None:
    if thread_id is None:
        return
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(kind) if kind is not None else None)


def describe(error: BaseException, files: Optional[set] = None) -> Dict[str, Any]:
    """A job's exception as plain data: its type, message and the frames in the user's code.

    ``files`` are the program's source files; without them, every frame whose
    file is not part of the server's own installation is kept.
    """
    cls = type(error)
    frames = []
    for f in traceback.extract_tb(error.__traceback__):
        if files is not None and f.filename not in files:
            continue
        frames.append([f.filename, f.lineno, f.name, f.line or ""])
    return {"type": "%s.%s" % (cls.__module__, cls.__qualname__), "message": str(error),
            "hint": "", "frames": frames}
