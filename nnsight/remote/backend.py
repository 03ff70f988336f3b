"""One remote job seen from the client: submit, follow its status, fetch and decode its result.

``with model.trace(..., remote=True):`` waits (:meth:`RemoteBackend.wait`):
status changes are shown as log lines (``CONFIG.APP.REMOTE_LOGGING``), the
job's ``print()`` output is printed here as it arrives, and the saved values
are returned to be written back. With ``blocking=False`` the trace returns at
once; ``tracer.backend`` then answers ``backend()``: None until the job is
done, then the dict of saved names plus ``'id'``; ``backend.cancel()`` stops it.
"""
import sys
import time
from typing import Any, Callable, Dict, Optional

from .client import Client
from .errors import RemoteError, job_error

TERMINAL = ("COMPLETED", "ERROR", "CANCELLED")
Decode = Callable[[bytes], Dict[str, Any]]


def _logging_on() -> bool:
    try:
        from ..config import CONFIG

        return bool(CONFIG.APP.REMOTE_LOGGING)
    except Exception:  # noqa: BLE001 - torch-free client
        return True


class RemoteBackend:
    """A submitted job (``job_id``, ``job_status``) and how to get its result."""

    def __init__(self, client: Client, decode: Decode) -> None:
        self.client = client
        self.decode = decode
        self.job_id: Optional[str] = None
        self.job_status: Optional[str] = None
        self._logs_seen = 0
        self._saved: Optional[Dict[str, Any]] = None

    # -- status display ------------------------------------------------------------------------

    def _show(self, status: str, detail: str = "") -> None:
        if status == self.job_status and not detail:
            return
        self.job_status = status
        if _logging_on():
            print("[%s] %s%s" % (self.job_id, status, (": " + detail) if detail else ""), file=sys.stderr)

    def _log(self, n: Optional[int], line: str) -> None:
        if n is not None and n < self._logs_seen:
            return  # already shown (a subscriber may see a line twice)
        self._logs_seen = (n + 1) if n is not None else self._logs_seen + 1
        print(line)

    # -- the job -------------------------------------------------------------------------------

    def submit(self, payload: bytes) -> str:
        reply = self.client.submit(payload)
        self.job_id = reply["id"]
        self._show("RECEIVED")
        position = reply.get("position")
        self._show("QUEUED", "position %d" % position if isinstance(position, int) else "")
        return self.job_id

    def wait(self, poll_s: float = 0.05) -> Dict[str, Any]:
        """Follow the job to its end; the saved values (raises the job's error)."""
        final: Optional[Dict[str, Any]] = None
        try:
            for frame in self.client.events(self.job_id, inline_result=True):
                final = self._frame(frame)
                if final is not None:
                    break
        except RemoteError:
            raise
        except Exception:  # noqa: BLE001 - no event stream (proxy, closed socket): poll instead
            final = None
        while final is None:
            status = self.client.status(self.job_id)
            for n, line in enumerate(status.get("logs") or []):
                self._log(n, line)
            final = self._frame({"status": status["status"], "position": status.get("position"),
                                 "error": status.get("error")})
            if final is None:
                time.sleep(poll_s)
        return self._finish(final)

    def _frame(self, frame: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """Show one status frame; the frame itself when it is the job's last."""
        status = frame.get("status")
        if status == "LOG":
            self._log(frame.get("n"), str(frame.get("line", "")))
            return None
        if status == "QUEUED" and isinstance(frame.get("position"), int):
            self._show("QUEUED", "position %d" % frame["position"])
        elif status in TERMINAL:
            return frame
        elif isinstance(status, str):
            self._show(status)
        return None

    def _finish(self, frame: Dict[str, Any]) -> Dict[str, Any]:
        try:
            return self._outcome(frame)
        finally:
            self.client.close()  # the job is over: nothing more to ask the server

    def _outcome(self, frame: Dict[str, Any]) -> Dict[str, Any]:
        status = frame["status"]
        if status == "COMPLETED":
            data = frame.get("result")
            if not isinstance(data, bytes):  # not sent inline (large, or the status was polled)
                data = self.client.result(self.job_id)
            self._show("COMPLETED", "%d bytes" % len(data))
            self._saved = self.decode(data)
            return self._saved
        if status == "CANCELLED":
            self._show("CANCELLED")
            raise RemoteError("remote job %s was cancelled" % self.job_id, code="cancelled")
        error = frame.get("error") or self.client.status(self.job_id).get("error") or {}
        self._show("ERROR", str(error.get("message", ""))[:200])
        raise job_error(error, self.job_id)

    # -- blocking=False ------------------------------------------------------------------------

    def __call__(self) -> Optional[Dict[str, Any]]:
        """None while the job runs; then the saved values by name plus ``'id'`` (raises its error)."""
        if self._saved is None:
            status = self.client.status(self.job_id)
            for n, line in enumerate(status.get("logs") or []):
                self._log(n, line)
            if status["status"] not in TERMINAL:
                self._show(status["status"])
                return None
            self._finish({"status": status["status"], "error": status.get("error")})
        out = dict(self._saved or {})
        out["id"] = self.job_id
        return out

    def cancel(self) -> str:
        """Cancel the job (a queued job ends at once, a running one at its next step)."""
        reply = self.client.cancel(self.job_id)
        self._show(reply["status"])
        return reply["status"]
