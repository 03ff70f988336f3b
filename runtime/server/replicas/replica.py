"""One model replica, the body of a Ray actor: request bytes in, result bytes out.

The front (:mod:`.pool`) creates one actor of this class per replica. A job runs
here through the same runner and accept path as in the embedded server
(:class:`runtime.server.runner.InProcessRunner`, :mod:`runtime.accept`), with its
wall-clock limit and cancellation. The actor is threaded: while :meth:`run` runs a
job, the front calls :meth:`poll` for the lines the job printed and for a
``tracer.local()`` block waiting on the client, :meth:`reply_local` with the
client's answer, and :meth:`interrupt` to cancel it.

Everything crossing the actor boundary is plain data (bytes, str, dicts of them):
an outcome is ``{"status": "COMPLETED", "result": bytes}``, ``{"status": "ERROR",
"error": info}``, ``{"status": "TIMEOUT"}`` or ``{"status": "CANCELLED"}``, never a
pickled exception.
"""
import os
import threading
import time
from typing import Any, Dict, List, Optional

POLL_S = 0.05  # how often a job waiting on a tracer.local() reply checks for an interrupt


class _Job:
    """What the front has not collected yet of the running job."""

    def __init__(self, job_id: str, max_lines: int) -> None:
        self.id = job_id
        self.lines: List[str] = []
        self.kept = 0
        self.max_lines = max_lines
        self.local: Optional[Dict[str, Any]] = None  # {"block", "message"} while a block waits
        self.reply: Optional[Dict[str, Any]] = None
        self.replied = threading.Event()


class Replica:
    """A copy of one hosted model in a Ray actor (created by :class:`.pool.ReplicaPool`)."""

    def __init__(self, name: str, source: str, local_block_timeout_s: float, max_log_lines: int) -> None:
        from nnsight.tracing.remote import model_for_key, server_tracer

        from ..models import HostedModel
        from ..runner import InProcessRunner

        self.hosted = HostedModel(name, source)
        self.hosted.state = "COLD"
        self.runner = InProcessRunner(server_tracer, model_for_key)
        self.local_block_timeout_s = local_block_timeout_s
        self.max_log_lines = max_log_lines
        self._lock = threading.Lock()
        self._job: Optional[_Job] = None

    # -- lifecycle -------------------------------------------------------------------------------

    def ping(self) -> Dict[str, Any]:
        import ray

        return {"state": self.hosted.state, "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}

    def load(self) -> int:
        """Load the model (once); its size in bytes."""
        if self.hosted.model is None:
            from ..models import model_bytes

            self.hosted.load()
            self.hosted.size_bytes = model_bytes(self.hosted.model)
        return self.hosted.size_bytes

    def unload(self) -> None:
        self.hosted.unload()
        self.hosted.state = "EVICTED"

    # -- jobs --------------------------------------------------------------------------------------

    def run(self, job_id: str, payload: bytes, time_limit_s: float) -> Dict[str, Any]:
        """Run one job; its outcome as plain data (see the module docstring)."""
        from ..runner import JobCancelled, JobFailed, JobTimeout

        job = _Job(job_id, self.max_log_lines)
        with self._lock:
            self._job = job
        try:
            try:
                self.load()
            except Exception as error:  # noqa: BLE001 - the job's account of it
                return {"status": "ERROR", "error": {
                    "type": "ModelUnavailableError", "message": "model %r could not be loaded on this replica: "
                    "%s: %s" % (self.hosted.name, type(error).__name__, error),
                    "hint": "the server's operator can see the details in its log", "frames": []}}
            result = self.runner.run(payload, self.hosted.model, lambda line: self._log(job, line), time_limit_s,
                                     local=lambda block, message: self._ask_local(job, block, message))
            return {"status": "COMPLETED", "result": result}
        except JobFailed as failure:
            return {"status": "ERROR", "error": failure.info}
        except JobTimeout:
            return {"status": "TIMEOUT"}
        except JobCancelled:
            return {"status": "CANCELLED"}
        finally:
            self.runner.settle()

    def poll(self, job_id: str) -> Dict[str, Any]:
        """The lines the job printed since the last poll, and a tracer.local() block it waits on."""
        with self._lock:
            job = self._job
            if job is None or job.id != job_id:
                return {"lines": [], "local": None}
            lines, job.lines = job.lines, []
            return {"lines": lines, "local": job.local}

    def reply_local(self, job_id: str, block: int, reply: Optional[bytes], error: Optional[str],
                    timed_out: bool = False) -> None:
        """The client's answer to the job's waiting block (``reply``), or why there is none."""
        with self._lock:
            job = self._job
            if job is None or job.id != job_id or job.local is None or job.local["block"] != block:
                return
            job.reply = {"reply": reply, "error": error, "timed_out": timed_out}
            job.local = None
            job.replied.set()

    def interrupt(self, job_id: str) -> None:
        """Cancel the job if it is the one running here."""
        from ..runner import JobCancelled

        with self._lock:
            if self._job is not None and self._job.id == job_id:
                self.runner.interrupt(JobCancelled)

    # -- inside the job's thread -------------------------------------------------------------------

    def _log(self, job: _Job, line: str) -> None:
        with self._lock:
            if job.kept < job.max_lines:  # later lines are not kept (the store keeps as many)
                job.lines.append(line)
                job.kept += 1

    def _ask_local(self, job: _Job, block: int, message: bytes) -> bytes:
        """The job's tracer.local() transport: the front relays ``message`` to the client."""
        from runtime.local_blocks import LocalBlockError, LocalBlockTimeout

        with self._lock:
            job.reply = None
            job.replied.clear()
            job.local = {"block": block, "message": message}
        deadline = time.monotonic() + self.local_block_timeout_s + 30.0  # the front times out first
        while not job.replied.wait(POLL_S):  # short waits: a cancel or the time limit lands promptly
            if time.monotonic() > deadline:
                with self._lock:
                    job.local = None
                raise LocalBlockTimeout("the server's front did not relay local block %d's reply" % block)
        answer = job.reply or {}
        if answer.get("reply") is not None:
            return answer["reply"]
        error = answer.get("error") or "no reply"
        raise (LocalBlockTimeout if answer.get("timed_out") else LocalBlockError)(error)
