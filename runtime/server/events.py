"""Status frames of jobs, fanned out to the subscribers of each job.

The worker thread publishes; each ``/v1/requests/{id}/events`` WebSocket and each
streamed submit (``POST /v1/requests?stream=1``, :mod:`.streamed`) holds one
asyncio queue. A streamed submit subscribes before its job is stored, so it
needs no replay. Nothing is kept for a job nobody listens to: a subscriber
first subscribes, then replays the job's lifecycle so far and its logs from
the store (:func:`history`), so it misses nothing and sees the statuses in
order; live frames the replay already covered are dropped (:func:`is_replayed`;
LOG frames carry their index ``n``). The registry holds only live connections.
"""
import asyncio
import threading
from typing import Any, Dict, List, Optional

RECEIVED, QUEUED, DISPATCHED, RUNNING = "RECEIVED", "QUEUED", "DISPATCHED", "RUNNING"
LOG, COMPLETED, ERROR, CANCELLED = "LOG", "COMPLETED", "ERROR", "CANCELLED"
LOCAL = "LOCAL"  # a tracer.local() block waits for the client (the frame's bytes follow it)
TERMINAL = (COMPLETED, ERROR, CANCELLED)
# How late a status nobody needs at once (DISPATCHED, RUNNING) may reach its subscribers: published
# lazily, it goes out with the job's next frame, or at the next tick of the event loop's flush.
STATUS_DELAY_S = 0.05


class EventHub:
    """Thread-safe publish, asyncio subscribe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._subscribers: Dict[str, List[asyncio.Queue]] = {}
        self._lazy: List[tuple] = []  # (queues, frames) published lazily, not yet delivered

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop the subscribers' queues belong to (the HTTP server's); call from it."""
        self._loop = loop
        loop.call_later(STATUS_DELAY_S, self._tick)

    def _tick(self) -> None:
        """(event loop) Deliver the lazily published frames, now and then."""
        with self._lock:
            lazy, self._lazy = self._lazy, []
        _deliver(lazy)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_later(STATUS_DELAY_S, self._tick)

    def subscribe(self, job_id: str) -> "asyncio.Queue[Dict[str, Any]]":
        queue: "asyncio.Queue[Dict[str, Any]]" = asyncio.Queue()
        with self._lock:
            self._subscribers.setdefault(job_id, []).append(queue)
        return queue

    def unsubscribe(self, job_id: str, queue: "asyncio.Queue") -> None:
        with self._lock:
            queues = self._subscribers.get(job_id)
            if queues is not None and queue in queues:
                queues.remove(queue)
                if not queues:
                    del self._subscribers[job_id]

    def watched(self) -> List[str]:
        """Ids of the jobs someone is subscribed to."""
        with self._lock:
            return list(self._subscribers)

    def is_watched(self, job_id: str) -> bool:
        """Is someone subscribed to the job now?"""
        with self._lock:
            return job_id in self._subscribers

    def publish(self, job_id: str, status: str, **fields: Any) -> None:
        """Send one frame to the job's subscribers (from any thread)."""
        frame = {"id": job_id, "status": status}
        frame.update(fields)
        self.publish_frames(job_id, [frame])

    def publish_frames(self, job_id: str, frames: List[Dict[str, Any]], lazy: bool = False) -> None:
        """Send several frames, in order, waking the event loop once (``lazy``: not at all).

        Each wake-up is a system call and a hand-over of the interpreter lock between the worker and
        the HTTP thread, on the round trip's critical path: statuses that follow each other within
        microseconds (DISPATCHED, RUNNING) go together, and lazily: they wait for the job's next
        frame (a short job's COMPLETED), or at most :data:`STATUS_DELAY_S`. Frames published earlier,
        lazily or not, always reach a subscriber first."""
        loop = self._loop
        with self._lock:
            queues = list(self._subscribers.get(job_id, ()))
            if not queues or loop is None:
                return
            if lazy:
                self._lazy.append((queues, frames))
                return
            batch, self._lazy = self._lazy, []
        batch.append((queues, frames))
        try:
            loop.call_soon_threadsafe(_deliver, batch)
        except RuntimeError:  # the loop is closed: the server is stopping
            return


def _deliver(batch: List[tuple]) -> None:
    for queues, frames in batch:
        for queue in queues:
            for frame in frames:
                queue.put_nowait(frame)


ORDER = {RECEIVED: 0, QUEUED: 1, DISPATCHED: 2, RUNNING: 3, COMPLETED: 4, ERROR: 4, CANCELLED: 4}


def history(job: Dict[str, Any], position: Optional[int]) -> List[Dict[str, Any]]:
    """The status frames a job has been through so far, rebuilt from its stored row.

    A subscriber connects after the submit's 202, often after DISPATCHED (or even
    COMPLETED) was published: replaying this history first means every client sees
    the whole lifecycle, in order, however late it subscribed.
    """
    job_id, status = job["id"], job["status"]
    frames = [{"id": job_id, "status": RECEIVED}, {"id": job_id, "status": QUEUED}]
    if status == QUEUED:
        frames[-1]["position"] = position
        return frames
    if job.get("started") is not None:  # it was taken from the queue
        frames += [{"id": job_id, "status": DISPATCHED}, {"id": job_id, "status": RUNNING}]
    if status in TERMINAL:
        frames.append({"id": job_id, "status": status, "error": job.get("error")})
    return frames


def is_replayed(frame: Dict[str, Any], last: Dict[str, Any], logs_sent: int) -> bool:
    """Was ``frame`` (published live) already sent to this subscriber by the replay?"""
    status = frame.get("status")
    if status == LOG:
        n = frame.get("n")
        return isinstance(n, int) and n < logs_sent
    if status == QUEUED and last.get("status") == QUEUED:
        return False  # a new queue position
    return ORDER.get(status, 99) <= ORDER.get(last.get("status"), -1)
