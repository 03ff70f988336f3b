"""One remote job seen from the client: submit, follow its status, fetch and decode its result.

``with model.trace(..., remote=True):`` waits (:meth:`RemoteBackend.wait`):
status changes are shown as a live status line on a terminal, as log lines
elsewhere (``display``; ``CONFIG.APP.REMOTE_LOGGING``), in lifecycle order
(RECEIVED, QUEUED, DISPATCHED, RUNNING, COMPLETED), the job's ``print()``
output is printed here (stdout) as it arrives, as ``[job-id] LOG        : line``,
and the saved values are returned to be written back. A blocking job is one streamed HTTP round
trip (``POST /v1/requests?stream=1``) unless its program has ``tracer.local()`` blocks, which
need the events WebSocket to answer the server. With ``blocking=False`` the trace returns at
once; ``tracer.backend`` then answers ``backend()``: None until the job is
done, then the dict of saved names plus ``'id'``; ``backend.job_status`` is a
:class:`JobStatus`; ``backend.cancel()`` stops it.
"""
import enum
import time
from typing import Any, Callable, Dict, Iterator, Optional

from . import versions
from .client import Client
from .display import StatusLine
from .errors import RemoteError, job_error


class JobStatus(str, enum.Enum):
    """Where a job is (``backend.job_status``); equal to its name as a string (``== "QUEUED"``)."""

    RECEIVED = "RECEIVED"
    QUEUED = "QUEUED"
    DISPATCHED = "DISPATCHED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"

    def __str__(self) -> str:  # the same on every Python (3.12 changed str() of mixed-in enums)
        return "JobStatus." + self.name


TERMINAL = ("COMPLETED", "ERROR", "CANCELLED")
ORDER = {"RECEIVED": 0, "QUEUED": 1, "DISPATCHED": 2, "RUNNING": 3, "COMPLETED": 4, "ERROR": 4, "CANCELLED": 4}
Decode = Callable[[bytes], Dict[str, Any]]


class RemoteBackend:
    """A submitted job (``job_id``, ``job_status``) and how to get its result."""

    def __init__(self, client: Client, decode: Decode, local_blocks: Any = None) -> None:
        self.client = client
        self.decode = decode
        self.local_blocks = local_blocks  # answers the job's tracer.local() blocks (nnsight.tracing.local_block)
        self.job_id: Optional[str] = None
        self.job_status: Optional[JobStatus] = None
        self._logs_seen = 0
        self._blocks_answered: set = set()  # a LOCAL frame seen twice (replay and live) runs its block once
        self._saved: Optional[Dict[str, Any]] = None
        self._line: Optional[StatusLine] = None
        self._detail = ""
        self._blocking = True
        self.transport: Optional[str] = None  # how the job is followed: "stream", "websocket" or "poll"
        self.payload: Optional[bytes] = None  # the request's bytes as sent (maybe in an older IR version)
        self._stream: Optional[Iterator[Dict[str, Any]]] = None  # the job's streamed frames, after its ack
        self._acked: Dict[str, Any] = {}

    # -- status display ------------------------------------------------------------------------

    @property
    def line(self) -> StatusLine:
        if self._line is None:
            self._line = StatusLine(live=self._blocking)
        return self._line

    def _show(self, status: str, detail: str = "") -> None:
        """Show a status change; a status the job is already past (a replayed frame) is skipped."""
        rank, current = ORDER.get(status, -1), ORDER.get(self.job_status, -1)
        if rank < current or (status, detail) == (self.job_status, self._detail):
            return
        self.job_status, self._detail = JobStatus(status) if status in JobStatus.__members__ else status, detail
        self.line.show(self.job_id, status, detail)

    def _log(self, n: Optional[int], line: str) -> None:
        if n is not None and n < self._logs_seen:
            return  # already shown (a subscriber may see a line twice)
        self._logs_seen = (n + 1) if n is not None else self._logs_seen + 1
        self.line.close()  # the user's output goes below the status line, not through it
        print("[%s] LOG        : %s" % (self.job_id, line))  # the job's print(), marked as coming from it

    # -- the job -------------------------------------------------------------------------------

    def submit(self, payload: bytes, blocking: bool = True, encode: Optional[versions.Encode] = None) -> str:
        """Send the job. Blocking: its status is shown by :meth:`wait`, from the server's replay of
        the lifecycle; otherwise RECEIVED and QUEUED are logged now (the id to come back for).

        A blocking job without ``tracer.local()`` blocks (the IR says so: ``local_blocks`` is None)
        is sent and followed in one streamed HTTP round trip (:meth:`Client.submit_stream`); one
        with local blocks is followed over the WebSocket, which carries the client's answers.
        ``encode(version)`` writes the request in an older IR version: a server that refuses
        ``payload``'s version gets it once more in the newest one it accepts (:mod:`.versions`).
        ``self.payload`` is what was sent.
        """
        self.payload = payload
        try:
            return self._submit(payload, blocking)
        except RemoteError as error:
            version = versions.older_version(error) if encode is not None else None
            if version is None:
                raise
        url = self.client.url
        self.payload = versions.encode_for(url, encode, version)  # type: ignore[arg-type]
        job_id = self._submit(self.payload, blocking)
        versions.remember(url, version)
        return job_id

    def _submit(self, payload: bytes, blocking: bool) -> str:
        self._blocking = blocking
        if blocking and self.local_blocks is None:
            self.transport = "stream"
            self._stream = self.client.submit_stream(payload)
            ack = next(self._stream)
            self.job_id = ack["id"]
            self._acked = ack
            return self.job_id
        reply = self.client.submit(payload)
        self.job_id = reply["id"]
        self.transport = "websocket" if blocking else "poll"
        if not blocking:
            self._show("RECEIVED")
            position = reply.get("position")
            self._show("QUEUED", "position %d" % position if isinstance(position, int) else "")
        return self.job_id

    def wait(self, poll_s: float = 0.05) -> Dict[str, Any]:
        """Follow the job to its end; the saved values (raises the job's error)."""
        final: Optional[Dict[str, Any]] = None
        self._show("RECEIVED")
        frames = None
        try:
            if self._stream is not None:  # the streamed round trip: its acknowledgement first
                frames, self._stream = self._stream, None
                final = self._frame(self._acked)
                if final is None:
                    for frame in frames:
                        final = self._frame(frame)
                        if final is not None:
                            break
            else:
                frames = self.client.events(self.job_id, inline_result=True)
                for frame in frames:
                    final = self._frame(frame)
                    if final is not None:
                        break
        except RemoteError:
            raise
        except Exception:  # noqa: BLE001 - no event stream (proxy, closed socket): poll instead
            blocks = self.local_blocks
            if blocks is not None:
                if blocks.failure is not None:
                    raise  # the user's error in a tracer.local() block (the server was told)
                raise RemoteError("remote job %s has `with tracer.local():` blocks, which need the job's event "
                                  "WebSocket, and that connection failed" % self.job_id, code="local_block")
            final = None
        finally:
            if frames is not None:
                frames.close()
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
        if status == "LOCAL":
            self._local(frame)
            return None
        if status == "QUEUED" and isinstance(frame.get("position"), int):
            if self.job_status in (None, "RECEIVED", "QUEUED"):
                self._show("QUEUED", "position %d" % frame["position"])
        elif status in TERMINAL:
            return frame
        elif isinstance(status, str):
            self._show(status)
        return None

    def _local(self, frame: Dict[str, Any]) -> None:
        """Run the block the server waits on here, send what it changed (or its error) back."""
        blocks, block = self.local_blocks, frame.get("block")
        if blocks is None or not isinstance(block, int) or not isinstance(frame.get("data"), bytes):
            raise RemoteError("remote job %s sent a LOCAL frame this trace cannot answer" % self.job_id,
                              code="local_block")
        if block in self._blocks_answered:
            return
        self._blocks_answered.add(block)
        frame["reply"](blocks.reply(block, frame["data"]))
        if blocks.failure is not None:
            raise blocks.failure

    def _finish(self, frame: Dict[str, Any]) -> Dict[str, Any]:
        try:
            return self._outcome(frame)
        finally:
            self.line.close()
            self.client.close()  # the job is over: nothing more to ask the server

    def _outcome(self, frame: Dict[str, Any]) -> Dict[str, Any]:
        status = frame["status"]
        if status == "COMPLETED":
            data = frame.get("result")
            if not isinstance(data, bytes):  # not sent inline (large, or the status was polled)
                bar = self.line.download_bar if self.line.live else None  # a plain GET when no bar can show
                data = self.client.result(self.job_id, bar)
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
