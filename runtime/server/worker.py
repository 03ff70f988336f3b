"""The worker: takes queued jobs from the store in order, runs them, records the outcome.

One worker thread runs one job at a time (the runtime's per-process tracing
state is not shared between concurrent jobs yet). Every transition is written
to the store first, then published as a status frame. The worker also deletes
expired jobs now and then.
"""
import logging
import threading
import time
from typing import Any, Dict, Optional

from . import events
from .config import ServerConfig
from .events import EventHub
from .local_exchange import LocalExchange
from .models import Models
from .runner import JobCancelled, JobFailed, JobInterrupted, JobRunner, JobTimeout
from .store import CANCELLED, COMPLETED, ERROR, Store

log = logging.getLogger("nnsight.server")


class Worker:
    """A thread draining the job queue."""

    def __init__(self, config: ServerConfig, store: Store, models: Models, runner: JobRunner,
                 hub: EventHub) -> None:
        self.config = config
        self.store = store
        self.models = models
        self.runner = runner
        self.hub = hub
        self.local = LocalExchange(hub, config.local_block_timeout_s, config.max_local_result_bytes)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._current: Optional[str] = None
        self._current_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="nnsight-worker", daemon=True)
        self._expired_at = 0.0
        self.jobs_done = 0  # jobs this process finished, in any end state (GET /v1/metrics)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self.runner.interrupt(JobCancelled)
        self._thread.join(timeout)

    def wake(self) -> None:
        """A job was queued."""
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        """Stop the job if it is the one running now."""
        with self._current_lock:
            if self._current == job_id:
                self.runner.interrupt(JobCancelled)

    # -- the loop ------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            job_id = None
            try:
                self._expire()
                job = self.store.claim_next()
                if job is None:
                    self._wake.wait(1.0)
                    self._wake.clear()
                    continue
                job_id = job["id"]
                self._announce_positions()
                self._process(job)
            except JobInterrupted:  # an interrupt that landed outside its job's own handling
                self.runner.settle()
                self._abandon(job_id, events.CANCELLED)
            except Exception:  # noqa: BLE001 - the worker must outlive any one job
                log.exception("nnsight-server worker: unexpected error")
                self._abandon(job_id, events.ERROR)
                time.sleep(0.1)

    def _abandon(self, job_id: Optional[str], status: str) -> None:
        """A job whose outcome could not be recorded: end it with ``status`` if still running."""
        if job_id is None:
            return
        job = self.store.get(job_id)
        if job is not None and job["status"] == "RUNNING":
            error = None if status == events.CANCELLED else {
                "type": "ServerError", "message": "the server failed while running this job",
                "hint": "the server's log has the details; submit the job again", "frames": []}
            self.store.finish(job_id, CANCELLED if status == events.CANCELLED else ERROR, error)
            self.hub.publish(job_id, status, error=error)

    def _expire(self) -> None:
        now = time.monotonic()
        if now - self._expired_at >= min(60.0, max(1.0, self.config.result_ttl_s / 10)):
            self._expired_at = now
            self.store.expire(self.config.result_ttl_s)

    def _announce_positions(self) -> None:
        for job_id in self.hub.watched():
            position = self.store.position(job_id)
            if position is not None:
                self.hub.publish(job_id, events.QUEUED, position=position)

    def _process(self, job: Dict[str, Any]) -> None:
        job_id = job["id"]
        hub = self.hub
        hub.publish(job_id, events.DISPATCHED)
        payload = self.store.read_blob(job_id, "request")
        if payload is None:
            self._fail(job_id, {"type": "JobLostError", "message": "the request of this job is missing from "
                                "the server's data directory", "hint": "submit it again", "frames": []})
            return
        hosted = self.models.by_name.get(job["model"])
        if hosted is None or hosted.model is None:
            self._fail(job_id, {"type": "ModelUnavailableError",
                                "message": "model %r is no longer hosted by this server" % job["model"],
                                "hint": "hosted models: %s" % ", ".join(self.models.names()), "frames": []})
            return
        limit = self.config.max_log_lines

        def log(line: str) -> None:
            n = self.store.add_log(job_id, line, limit)
            if n is not None:
                hub.publish(job_id, events.LOG, n=n, line=line)

        with self._current_lock:
            self._current = job_id
        hub.publish(job_id, events.RUNNING)
        try:
            runner = self.runner.for_tier(job.get("tier"))
            result = runner.run(payload, hosted.model, log, self.config.job_time_limit_s,
                                local=lambda block, message: self.local.ask(job_id, block, message))
        except JobFailed as failure:
            self._fail(job_id, failure.info)
        except JobTimeout:
            self._fail(job_id, {"type": "JobTimeoutError",
                                "message": "the job ran longer than this server's limit of %gs and was stopped"
                                % self.config.job_time_limit_s,
                                "hint": "make the job smaller (fewer tokens, fewer invokes) or split it",
                                "frames": []})
        except JobInterrupted:
            self.store.finish(job_id, CANCELLED)
            hub.publish(job_id, events.CANCELLED)
        else:
            self.store.finish(job_id, COMPLETED, result=result)
            hub.publish(job_id, events.COMPLETED, size=len(result), result=result)  # (inline for small)
        finally:
            with self._current_lock:
                self._current = None
            self.jobs_done += 1

    def _fail(self, job_id: str, info: Dict[str, Any]) -> None:
        self.store.finish(job_id, ERROR, info)
        self.hub.publish(job_id, events.ERROR, error=info)

