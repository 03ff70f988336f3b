"""Job runners: run one request's bytes against a hosted model and return the result bytes.

:class:`JobRunner` is the interface the worker uses; :class:`InProcessRunner`
runs the job in the calling (worker) thread through the one accept path
(:mod:`runtime.accept`). An out-of-process runner (a job that can be killed
outright, with its own memory limit) implements the same interface.

A job is interrupted (wall-clock limit, cancel) by raising an exception in the
worker thread at the next Python bytecode (:mod:`.interrupts`): a job stuck in
one long native call (a huge matmul) stops when it returns. A late interrupt
(the job ended meanwhile) is drained.
"""
import contextlib
import itertools
import threading
import time
import traceback
from typing import Any, Callable, ContextManager, Dict, Optional, Tuple

from runtime import accept, integrity

from . import interrupts

LogLine = Callable[[str], None]
# (hosted model, request's model key) -> a context manager giving the model as that client sees it
ModelForKey = Callable[[Any, str], ContextManager[Any]]


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

    def run(self, payload: bytes, model: Any, log: LogLine, time_limit_s: float,
            local: Optional[accept.Transport] = None) -> bytes:
        """The result bytes of ``payload`` run on ``model`` (``local``: its tracer.local() blocks' client).

        Raises :class:`JobFailed` for the job's own error, :class:`JobInterrupted` when stopped.
        """
        raise NotImplementedError

    def interrupt(self, kind: type) -> None:
        """Stop the running job with ``kind`` (a :class:`JobInterrupted` subclass), if any."""
        raise NotImplementedError

    def settle(self) -> None:
        """Called by the worker after a stray interrupt: make sure no job is marked running."""

    def for_tier(self, tier: Optional[str]) -> "JobRunner":
        """The runner for a job of an API key with ``tier`` (a tiered runner picks one; see runtime/sandbox)."""
        return self

    def status(self) -> Dict[str, Any]:
        """What this runner reports in ``GET /v1/metrics`` (the sandbox's kernel layers)."""
        return {}


class InProcessRunner(JobRunner):
    """Runs a job in the calling thread, through the one accept path (:mod:`runtime.accept`).

    An interrupt targets one job (its token), never a thread that has moved on: a thread id
    may be reused by another thread once its own has ended.
    """

    def __init__(self, make_tracer: accept.MakeTracer, model_for_key: Optional[ModelForKey] = None) -> None:
        self.make_tracer = make_tracer
        self.model_for_key = model_for_key
        self._lock = threading.Lock()
        self._thread: Optional[int] = None  # the thread running a job now
        self._job = 0  # the running job's token (0: none)
        self._deadline: Optional[float] = None
        self._sent = False  # an interrupt was sent to the running job (drained when it ends)
        self._tokens = itertools.count(1)
        # When the watchdog wakes next (None: only when notified). Jobs of one server have the same
        # time limit, so a new job's deadline is later than the watchdog's wake-up: it is notified
        # only when idle. Two thread switches per job saved, on the round trip's critical path.
        self._wake_at: Optional[float] = None
        self._watch_intact = IntactWatch()
        self._changed = threading.Condition(self._lock)
        # One watchdog for all jobs: starting a thread while a job starts would open a window in
        # which CPython gives the new thread's state the starting thread's id (an interrupt could
        # land in the new thread).
        self._watchdog = threading.Thread(target=self._watch, name="nnsight-job-watchdog", daemon=True)
        self._watchdog.start()

    def run(self, payload: bytes, model: Any, log: LogLine, time_limit_s: float,
            local: Optional[accept.Transport] = None) -> bytes:
        before = self._watch_intact.before(model)
        with self._lock:
            self._thread, self._job = threading.get_ident(), next(self._tokens)
            self._deadline = time.monotonic() + time_limit_s
            if self._wake_at is None or self._deadline < self._wake_at:
                self._changed.notify()  # (else the watchdog wakes before this deadline anyway)
        try:
            result = self._attempt(payload, model, log, local)
        except BaseException as error:
            self._settle()
            self._watch_intact.after(before, error)
            raise
        self._settle()
        self._watch_intact.after(before, None)
        return result

    def _watch(self) -> None:
        with self._lock:
            while True:
                if self._job and self._deadline is not None:
                    left = self._deadline - time.monotonic()
                    if left <= 0:
                        interrupts.send(self._thread, JobTimeout)
                        self._sent = True
                        self._deadline = None
                        continue
                    self._wake_at = self._deadline
                    self._changed.wait(left)
                else:
                    self._wake_at = None
                    self._changed.wait()

    def _attempt(self, payload: bytes, model: Any, log: LogLine, local: Optional[accept.Transport]) -> bytes:
        files: set = set()
        try:
            with contextlib.ExitStack() as stack:  # the model's per-request view lasts the whole job

                def find_model(key: str) -> Any:
                    if self.model_for_key is None:
                        return model
                    return stack.enter_context(self.model_for_key(model, key))

                with accept.accepted(payload, find_model, log) as job:
                    files = job.files()
                    return accept.encode_saved(job, accept.run(job, self.make_tracer, local))
        except JobInterrupted:
            raise
        except BaseException as error:  # noqa: B902 - the user's error, reported to the client
            raise JobFailed(describe(error, files)) from error

    def _settle(self) -> None:
        """No interrupt can reach this thread any more; one already pending is drained."""
        while True:
            try:
                with self._lock:  # (no need to wake the watchdog: it finds no job when it wakes)
                    self._thread, self._job, self._deadline = None, 0, None
                    sent, self._sent = self._sent, False
                if sent:
                    interrupts.drain()
                return
            except JobInterrupted:  # it landed here: clear again
                continue

    def settle(self) -> None:
        self._settle()

    def interrupt(self, kind: type) -> None:
        with self._lock:
            if self._job and self._thread is not None:
                interrupts.send(self._thread, kind)
                self._sent = True


class IntactWatch:
    """A runner's integrity snapshots, carried from one job to the next.

    A job found intact leaves the model exactly as its snapshot recorded it, so that snapshot is
    also the next job's starting state, and taking a new one (about 40 % of the check's cost) can
    be skipped. Only a runner's hosted model qualifies: nothing but its jobs touch it. A new
    snapshot is taken after any job of the process changed something (even once undone: a restored
    weight may have new storage), after a server module gained names, on another thread (torch's
    modes are per thread) or another model.
    """

    def __init__(self) -> None:
        self._last: Optional[Tuple[integrity.Snapshot, int, int]] = None

    def before(self, model: Any) -> integrity.Snapshot:
        last, self._last = self._last, None
        if last is not None and last[1:] == (threading.get_ident(), integrity.undone_count()) \
                and last[0].root is integrity.root_module(model):
            return last[0]
        return integrity.snapshot(model)

    def after(self, before: integrity.Snapshot, error: Optional[BaseException]) -> None:
        """:func:`check_intact`; a snapshot that found nothing changed is kept for the next job."""
        before.grown = False
        check_intact(before, error)
        if not before.grown and before.root is not None:
            self._last = (before, threading.get_ident(), integrity.undone_count())


def check_intact(before: integrity.Snapshot, error: Optional[BaseException]) -> None:
    """After a job, with no interrupt able to land: fail it if it changed the model (undone first)."""
    try:
        integrity.enforce(before)
    except integrity.IntegrityError as violation:
        raise JobFailed(describe(violation, set())) from (error or violation)


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
