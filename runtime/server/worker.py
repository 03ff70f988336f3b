"""The worker: takes queued jobs from the store in order, runs them, records the outcome.

One worker thread runs one job at a time (the runtime's per-process tracing
state is not shared between concurrent jobs yet). Every transition is written
to the store first, then published as a status frame. The worker also deletes
expired jobs (and audit rows) now and then.

Each job runs under its key's tier and limits (:mod:`.keys`): :meth:`Worker.runner_for` picks
the runner of its tier, its wall time and result size are its key's. Refusals, limit hits,
integrity violations and killed jobs go to the audit log (:mod:`.audit`).
"""
import logging
import threading
import time
from typing import Any, Dict, Optional

from . import audit, dispatch, events, keys
from .config import ServerConfig
from .events import EventHub
from .local_exchange import LocalExchange
from .lifecycle import READY
from .models import Models, unavailable
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
        self.runner = runner  # the trusted tier's (in-process)
        self._running: JobRunner = runner  # the runner of the job running now
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
        self._running.interrupt(JobCancelled)
        self._thread.join(timeout)

    def wake(self) -> None:
        """A job was queued."""
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        """Stop the job if it is the one running now."""
        with self._current_lock:
            if self._current == job_id:
                self._running.interrupt(JobCancelled)

    # -- the loop ------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            job_id = None
            try:
                self._expire()
                self._wake.clear()  # (a job queued from now on wakes the wait below)
                job = self.store.claim_next()
                if job is None:
                    self._wake.wait(1.0)
                    continue
                job_id = job["id"]
                if job["more_queued"]:  # (else no queued job's place changed)
                    self._announce_positions()
                self._process(job)
                if not job["more_queued"]:
                    # Nothing was queued behind it: wait for a submit's wake-up (or the next poll) rather
                    # than ask the store at once, while the HTTP thread sends this job's last frame.
                    self._wake.wait(1.0)
            except JobInterrupted:  # an interrupt that landed outside its job's own handling
                self._running.settle()
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
        if now - self._expired_at >= dispatch.expire_period(self.config):
            self._expired_at = now
            dispatch.expire(self.store, self.config)

    def runner_for(self, tier: str) -> JobRunner:
        """The runner of a tier (``runtime/sandbox``'s tiered runner picks by ``--sandbox`` mode and tier)."""
        return self.runner.for_tier(tier)

    def _announce_positions(self) -> None:
        dispatch.announce_positions(self.store, self.hub)

    def _process(self, job: Dict[str, Any]) -> None:
        job_id = job["id"]
        hub = self.hub
        payload = self.store.read_blob(job_id, "request")
        hosted = self.models.by_name.get(job["model"])
        # DISPATCHED goes with RUNNING below (lazily: with the job's next frame, no wake-up of the HTTP
        # thread of its own), unless something may come between them: a failure, or a model's load
        early = payload is None or hosted is None or hosted.state != READY
        if early:
            hub.publish(job_id, events.DISPATCHED)
        if payload is None:
            self._fail(job_id, {"type": "JobLostError", "message": "the request of this job is missing from "
                                "the server's data directory", "hint": "submit it again", "frames": []})
            return
        if hosted is not None:
            self.models.prepare(hosted)  # a lazy server loads the model now (lifecycle.py)
        if hosted is None or hosted.model is None:
            self._fail(job_id, unavailable(self.models, job["model"], hosted))
            return
        settings = keys.settings(self.store, self.config, job["key_id"])
        # the job's tier, recorded when it was accepted; the key's now if that is stricter (a key moved to
        # untrusted meanwhile) or none was recorded (a job queued before tiers existed)
        tier = keys.UNTRUSTED if keys.UNTRUSTED in (job.get("tier"), settings.tier) else settings.tier
        runner = self.runner_for(tier)
        limit = self.config.max_log_lines

        def log(line: str) -> None:
            n = self.store.add_log(job_id, line, limit)
            if n is not None:
                hub.publish(job_id, events.LOG, n=n, line=line)

        with self._current_lock:
            self._current, self._running = job_id, runner
        statuses = [events.RUNNING] if early else [events.DISPATCHED, events.RUNNING]
        hub.publish_frames(job_id, [{"id": job_id, "status": status} for status in statuses], lazy=True)
        key_id = job["key_id"]
        try:
            result = runner.run(payload, hosted.model, log, settings.job_time_limit_s,
                                local=lambda block, message: self.local.ask(job_id, block, message))
        except JobFailed as failure:
            audit.job_failure(self.store, key_id, job_id, failure.info)
            self._fail(job_id, failure.info)
        except JobTimeout:
            audit.record(self.store, audit.KILLED, key_id, job_id, "timeout",
                         "ran past its wall-time limit of %gs" % settings.job_time_limit_s)
            self._fail(job_id, {"type": "JobTimeoutError",
                                "message": "the job ran longer than its limit of %gs and was stopped"
                                % settings.job_time_limit_s,
                                "hint": "make the job smaller (fewer tokens, fewer invokes) or split it; the "
                                        "operator sets the limit (`nnsight-server keys set KEY_ID "
                                        "--job-time-limit S`, or `serve --job-time-limit`)", "frames": []})
        except JobInterrupted as stop:
            audit.record(self.store, audit.KILLED, key_id, job_id, stop.reason,
                         "stopped while running (%s)" % stop.reason)
            self.store.finish(job_id, CANCELLED)
            hub.publish(job_id, events.CANCELLED)
        else:
            if len(result) > settings.max_result_bytes:
                info = result_too_large(len(result), settings.max_result_bytes)
                audit.job_failure(self.store, key_id, job_id, info)
                self._fail(job_id, info)  # nothing of the result is stored
                return
            self.store.finish(job_id, COMPLETED, result=result)
            hub.publish(job_id, events.COMPLETED, size=len(result), result=result)  # (inline for small)
        finally:
            with self._current_lock:
                self._current, self._running = None, self.runner
            self.jobs_done += 1

    def _fail(self, job_id: str, info: Dict[str, Any]) -> None:
        dispatch.fail(self.store, self.hub, job_id, info)


def result_too_large(size: int, limit: int) -> Dict[str, Any]:
    """The error of a job whose result exceeds its key's limit."""
    return {"type": "ResultTooLargeError",
            "message": "the job's result is %d bytes, more than this key's limit of %d bytes; it was not stored"
                       % (size, limit),
            "hint": "save less (a slice, a reduction such as .mean(), fewer steps), or ask the server's operator "
                    "to raise the limit: `nnsight-server keys set KEY_ID --max-result-bytes N` (or "
                    "`serve --max-result-bytes N` for every key)", "frames": []}
