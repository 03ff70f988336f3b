"""Pending ``tracer.local()`` blocks of running jobs: the worker asks, the job's WebSocket answers.

The worker thread (running the job) publishes a LOCAL frame with the block's
values and waits; a LOCAL_RESULT binary message on one of that job's event
WebSockets (each authenticated with the job's own key when it connected) is
handed over -- only for the job's own pending block, only once, only up to
``max_bytes``. No reply within ``timeout_s`` (or ``unfollowed_s`` with no client
connected, or at once when the last one leaves) ends the job with a clear error.
Entries live only while their worker waits.
"""
import threading
import time
from typing import Dict, Optional

from runtime.local_blocks import LocalBlockError, LocalBlockTimeout, unframe_reply

from . import events
from .events import EventHub


class _Pending:
    __slots__ = ("block", "message", "reply", "abandoned", "done")

    def __init__(self, block: int, message: bytes) -> None:
        self.block = block
        self.message = message
        self.reply: Optional[bytes] = None
        self.abandoned = False
        self.done = threading.Event()


class LocalExchange:
    """One per server; thread-safe."""

    def __init__(self, hub: EventHub, timeout_s: float, max_bytes: int, unfollowed_s: float = 30.0) -> None:
        self.hub = hub
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.unfollowed_s = min(unfollowed_s, timeout_s)  # how long a block waits with no client connected
        self._lock = threading.Lock()
        self._pending: Dict[str, _Pending] = {}

    def ask(self, job_id: str, block: int, message: bytes) -> bytes:
        """Send local block ``block``'s LOCAL message to the job's client; its LOCAL_RESULT body."""
        pending = _Pending(block, message)
        with self._lock:
            self._pending[job_id] = pending
        try:
            self.hub.publish(job_id, events.LOCAL, block=block, size=len(message), data=message)
            now = time.monotonic()
            deadline, followed_at = now + self.timeout_s, now
            while not pending.done.wait(0.05):  # short waits: a cancel or time limit lands promptly
                now = time.monotonic()
                if self.hub.is_watched(job_id):
                    followed_at = now
                if now >= deadline or now - followed_at >= self.unfollowed_s:
                    raise LocalBlockTimeout(
                        "the client did not answer local block %d within %gs (it must follow the job's "
                        "events to run `with tracer.local():` blocks)" % (block, now - (deadline - self.timeout_s)))
            if pending.abandoned or pending.reply is None:
                raise LocalBlockError("the client disconnected while the job waited for it to run local "
                                      "block %d" % block)
            return pending.reply
        finally:
            with self._lock:
                if self._pending.get(job_id) is pending:
                    del self._pending[job_id]

    def waiting(self, job_id: str) -> Optional[Dict[str, object]]:
        """The LOCAL frame a job waits on (for a client that connects late), or None."""
        with self._lock:
            pending = self._pending.get(job_id)
        if pending is None or pending.done.is_set():
            return None
        return {"id": job_id, "status": events.LOCAL, "block": pending.block, "size": len(pending.message),
                "data": pending.message}

    def deliver(self, job_id: str, message: bytes) -> Optional[str]:
        """Hand a LOCAL_RESULT to the job's waiting block; None when taken, else why it was refused."""
        if len(message) > self.max_bytes + 8:
            return "the reply is larger than this server's limit of %d bytes" % self.max_bytes
        try:
            block, body = unframe_reply(message)
        except ValueError as error:
            return str(error)
        with self._lock:
            pending = self._pending.get(job_id)
            if pending is None or pending.block != block or pending.done.is_set():
                return "job %s is not waiting for local block %d" % (job_id, block)
            pending.reply = body
            pending.done.set()
        return None

    def abandon(self, job_id: str) -> None:
        """The job's last event subscriber left: a block it waits on will get no answer."""
        with self._lock:
            pending = self._pending.get(job_id)
            if pending is not None and not pending.done.is_set():
                pending.abandoned = True
                pending.done.set()
