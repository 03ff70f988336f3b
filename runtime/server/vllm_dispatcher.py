"""The dispatcher of a vLLM-hosted server: many jobs in flight at once in one engine.

Where :class:`runtime.server.worker.Worker` runs one job at a time to its end,
the dispatcher keeps up to ``max_jobs`` jobs inside the ``AsyncLLM`` engine, whose
scheduler batches their requests continuously (each engine step takes whichever
requests are ready, from any job). One thread (``nnsight-vllm-dispatcher``) does
every step of a job that runs Python of the server process
(:mod:`nnsight.modeling.vllm.served`): admitting it (accept path, the body's
invokes collected, under the job's wall-clock limit), and turning the worker's
reply into the job's result bytes. Those steps touch process-wide tracing state
(the saved-object marks, ``sys.modules`` while user modules are hidden), so they
never overlap; the generation itself runs on the engine's event loop and in
its engine core, for all in-flight jobs together.

Per job, as with the worker: the store is written first, then the status frame
published; RUNNING once its requests are in the engine; the lines its
interventions printed arrive as LOG frames when it ends, before its end state;
a cancel or the wall-clock limit aborts its requests (the others go on); an
error of its own (an intervention raising, a prompt too long) ends only it.
"""
import asyncio
import logging
import threading
import time
from typing import Any, Dict, List, Optional

from . import dispatch, events, keys
from .config import ServerConfig
from .events import EventHub
from .local_exchange import LocalExchange
from .models import Models
from .runner import InProcessRunner, JobCancelled, JobFailed, JobInterrupted, JobTimeout, describe
from .store import CANCELLED, COMPLETED, ERROR, RUNNING, Store

log = logging.getLogger("nnsight.server")

DEFAULT_MAX_JOBS = 16
# The trace body's own statements run on the dispatcher thread while no other job is admitted or
# finished: they only collect the invokes, so they get at most this long (and at most the job limit).
ADMISSION_LIMIT_S = 30.0


class _Admission(InProcessRunner):
    """Step 1 of a job (:func:`served.admit`) under the wall-clock watchdog of the in-process runner:
    the trace body's own statements are user code, which may loop."""

    def __init__(self) -> None:
        super().__init__(make_tracer=None)  # type: ignore[arg-type]  (no tracer: admit() makes its own)

    def _attempt(self, payload: bytes, model: Any, log: Any, local: Any) -> Any:
        from nnsight.modeling.vllm import served

        files: set = set()
        try:
            return served.admit(payload, model, files)
        except JobInterrupted:
            raise
        except BaseException as error:  # noqa: B902 - the user's error, reported to the client
            raise JobFailed(describe(error, files)) from error


class _InFlight:
    """A job whose requests are in the engine."""

    __slots__ = ("job_id", "served", "future", "deadline", "stopping")

    def __init__(self, job_id: str, served: Any, future: Any, deadline: float) -> None:
        self.job_id = job_id
        self.served = served
        self.future = future
        self.deadline = deadline
        self.stopping: Optional[str] = None  # events.CANCELLED or "timeout" once asked to stop


class VLLMDispatcher:
    """Drains the job queue of a server whose models are hosted on vLLM (see the module docstring).

    Has the interface the HTTP service uses of :class:`~runtime.server.worker.Worker`: ``start``,
    ``stop``, ``wake``, ``cancel``, ``local`` and ``jobs_done``.
    """

    def __init__(self, config: ServerConfig, store: Store, models: Models, hub: EventHub,
                 max_jobs: int = DEFAULT_MAX_JOBS) -> None:
        if max_jobs < 1:
            raise ValueError("--max-engine-jobs must be at least 1")
        self.config = config
        self.store = store
        self.models = models
        self.hub = hub
        self.max_jobs = max_jobs
        # vLLM jobs have no tracer.local() blocks (refused at admission); the events route asks this
        self.local = LocalExchange(hub, config.local_block_timeout_s, config.max_local_result_bytes)
        self.jobs_done = 0
        self._admission = _Admission()
        self._inflight: Dict[str, _InFlight] = {}
        self._cancels: List[str] = []
        self._admitting: Optional[str] = None  # the job being admitted now (a cancel interrupts it)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._expired_at = 0.0
        self._thread = threading.Thread(target=self._loop, name="nnsight-vllm-dispatcher", daemon=True)

    # -- the Worker interface ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._admission.interrupt(JobInterrupted)
        self._thread.join(timeout)
        for entry in list(self._inflight.values()):
            entry.future.cancel()

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        """Stop the job if it is in flight (the loop thread aborts its requests)."""
        with self._lock:
            self._cancels.append(job_id)
        self._admission_cancel(job_id)
        self._wake.set()

    def _admission_cancel(self, job_id: str) -> None:
        with self._lock:
            if self._admitting == job_id:
                self._admission.interrupt(JobCancelled)

    # -- the loop -------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._expire()
                self._stop_asked()
                self._finish_done()
                started = self._start_queued()
                if not started:
                    self._wake.wait(self._wait_s())
                    self._wake.clear()
            except Exception:  # noqa: BLE001 - the dispatcher must outlive any one job
                log.exception("nnsight-server vLLM dispatcher: unexpected error")
                time.sleep(0.1)

    def _wait_s(self) -> float:
        if not self._inflight:
            return 1.0
        left = min(entry.deadline for entry in self._inflight.values()) - time.monotonic()
        return max(0.01, min(1.0, left))

    def _expire(self) -> None:
        now = time.monotonic()
        if now - self._expired_at >= dispatch.expire_period(self.config):
            self._expired_at = now
            dispatch.expire(self.store, self.config)

    def _stop_asked(self) -> None:
        """Cancels and expired deadlines: cancel the job's coroutine (it aborts its requests)."""
        with self._lock:
            cancels, self._cancels = self._cancels, []
        now = time.monotonic()
        for entry in self._inflight.values():
            if entry.stopping is None and entry.job_id in cancels:
                entry.stopping = events.CANCELLED
            elif entry.stopping is None and now >= entry.deadline:
                entry.stopping = "timeout"
            else:
                continue
            entry.future.cancel()

    def _start_queued(self) -> int:
        started = 0
        while len(self._inflight) < self.max_jobs and not self._stop.is_set():
            job = self.store.claim_next()
            if job is None:
                break
            started += 1
            self._announce_positions()
            try:
                self._start(job)
            except JobInterrupted:  # a cancel that landed outside the admission itself
                self._admission.settle()
                self._end_if_running(job["id"], events.CANCELLED)
        return started

    def _announce_positions(self) -> None:
        dispatch.announce_positions(self.store, self.hub)

    def _start(self, job: Dict[str, Any]) -> None:
        job_id = job["id"]
        self.hub.publish(job_id, events.DISPATCHED)
        payload = self.store.read_blob(job_id, "request")
        if payload is None:
            self._fail(job_id, {"type": "JobLostError", "message": "the request of this job is missing from "
                                "the server's data directory", "hint": "submit it again", "frames": []})
            return
        hosted = self.models.by_name.get(job["model"])
        if hosted is None or hosted.model is None or getattr(hosted, "engine", None) != "vllm":
            self._fail(job_id, {"type": "ModelUnavailableError",
                                "message": "model %r is not hosted on this server's vLLM engine" % job["model"],
                                "hint": "hosted models: %s" % ", ".join(self.models.names()), "frames": []})
            return
        if job.get("tier") == keys.UNTRUSTED:  # no per-job sandbox around a shared engine's worker
            self._fail(job_id, keys.tier_not_served("in the vLLM engine's one worker process"))
            self.jobs_done += 1
            return
        limit = self.config.job_time_limit_s
        deadline = time.monotonic() + limit
        with self._lock:
            self._admitting = job_id
        try:
            served = self._admission.run(payload, hosted.model, lambda line: None, min(limit, ADMISSION_LIMIT_S))
        except JobFailed as failure:
            self._fail(job_id, failure.info)
            self.jobs_done += 1
            return
        except JobTimeout:
            self._timed_out(job_id, admission=True)
            self.jobs_done += 1
            return
        except JobInterrupted:
            self._cancel_flagged(job_id)  # consumed
            self.store.finish(job_id, CANCELLED)
            self.hub.publish(job_id, events.CANCELLED)
            self.jobs_done += 1
            return
        finally:
            with self._lock:
                self._admitting = None
        if self._cancel_flagged(job_id):  # cancelled while it was being admitted
            self.store.finish(job_id, CANCELLED)
            self.hub.publish(job_id, events.CANCELLED)
            self.jobs_done += 1
            return
        from nnsight.modeling.vllm import served as served_mod

        engine = hosted.model.llm  # nnsight's AsyncEngine: AsyncLLM on its own loop
        future = asyncio.run_coroutine_threadsafe(served_mod.generate(engine.engine, served.prepared), engine.loop)
        self._inflight[job_id] = _InFlight(job_id, served, future, deadline)
        future.add_done_callback(lambda _: self._wake.set())
        self.hub.publish(job_id, events.RUNNING)

    def _cancel_flagged(self, job_id: str) -> bool:
        with self._lock:
            if job_id in self._cancels:
                self._cancels.remove(job_id)
                return True
        job = self.store.get(job_id)
        return bool(job is not None and job.get("cancel"))

    def _finish_done(self) -> None:
        for job_id in [j for j, e in self._inflight.items() if e.future.done()]:
            entry = self._inflight.pop(job_id)
            try:
                self._finish(entry)
            except Exception:  # noqa: BLE001 - record the failure, keep serving the others
                log.exception("nnsight-server vLLM dispatcher: could not record job %s", job_id)
                self._end_if_running(job_id, events.ERROR)
            finally:
                self.jobs_done += 1

    def _finish(self, entry: _InFlight) -> None:
        from nnsight.modeling.vllm import served

        job_id, future = entry.job_id, entry.future
        if future.cancelled():
            if entry.stopping == "timeout":
                self._timed_out(job_id)
            else:
                self.store.finish(job_id, CANCELLED)
                self.hub.publish(job_id, events.CANCELLED)
            return
        error = future.exception()
        if error is not None:  # the engine refused or lost a request (a prompt too long, ...)
            self._fail(job_id, describe(error, set()))
            return
        reply = future.result()
        for line in served.logs(reply):
            self._log(job_id, line)
        failures = served.errors(reply)
        if failures:
            self._fail(job_id, failures[0])
            return
        try:
            result = served.result(entry.served, reply)
        except BaseException as error:  # noqa: B902 - a save that cannot be sent back
            self._fail(job_id, describe(error, entry.served.accepted.files()))
            return
        self.store.finish(job_id, COMPLETED, result=result)
        self.hub.publish(job_id, events.COMPLETED, size=len(result), result=result)

    # -- outcomes -------------------------------------------------------------------------------

    def _log(self, job_id: str, line: str) -> None:
        n = self.store.add_log(job_id, line, self.config.max_log_lines)
        if n is not None:
            self.hub.publish(job_id, events.LOG, n=n, line=line)

    def _timed_out(self, job_id: str, admission: bool = False) -> None:
        if admission:
            limit = min(self.config.job_time_limit_s, ADMISSION_LIMIT_S)
            message = ("the trace body's own statements (outside its invokes) ran longer than %gs on the "
                       "server and were stopped: on a vLLM-hosted model they only collect the invokes" % limit)
            hint = "move the work into an invoke, or do it before the trace"
        else:
            message = "the job ran longer than this server's limit of %gs and was stopped" % \
                self.config.job_time_limit_s
            hint = "make the job smaller (fewer tokens, fewer invokes) or split it"
        self._fail(job_id, {"type": "JobTimeoutError", "message": message, "hint": hint, "frames": []})

    def _fail(self, job_id: str, info: Dict[str, Any]) -> None:
        dispatch.fail(self.store, self.hub, job_id, info)

    def _end_if_running(self, job_id: str, status: str) -> None:
        job = self.store.get(job_id)
        if job is not None and job["status"] == RUNNING:
            error = None if status == events.CANCELLED else {
                "type": "ServerError", "message": "the server failed while running this job",
                "hint": "the server's log has the details; submit the job again", "frames": []}
            self.store.finish(job_id, CANCELLED if status == events.CANCELLED else ERROR, error)
            self.hub.publish(job_id, status, error=error)
