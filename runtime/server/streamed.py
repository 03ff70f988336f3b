"""A blocking job in one HTTP round trip: ``POST /v1/requests?stream=1``.

The response body carries the job's status frames (framing:
:mod:`nnsight.remote.frames`): first the acknowledgement, written only after
the job is stored (in the response's headers instead, when the client asks
with ``nnsight-ack: headers``: one write, one wake-up of the client), then the live frames, LOG lines as they are printed, and
the terminal frame with a small result inline. This saves a blocking client
the WebSocket handshake and the second request per job: the request rides the
kept-alive connection pool. The subscription to the job's frames is made
before the job is stored, so nothing is missed and nothing needs replaying.

The worker is woken once the acknowledgement has been handed to the socket
(or when the response ends, whichever comes first): the job then runs without
the event loop contending for the GIL to send it. A program with
``tracer.local()`` blocks needs the WebSocket (the client answers on it): a
LOCAL frame reaching a stream goes out without its values, the client refuses
it, and the block fails when nobody is left to answer. A client that goes away
mid-stream only ends its subscription: the job runs on and its result stays
available by id (``GET /v1/requests/{id}``, the events WebSocket).
"""
import asyncio
from typing import Any, AsyncIterator, Callable, Dict, Tuple

from starlette.types import Receive, Scope, Send

from . import events

MEDIA_TYPE = "application/vnd.nnsight.frames"  # nnsight.remote.frames.MEDIA_TYPE


def _frames() -> Any:
    # Imported when first used, not with this module: importing nnsight mounts ``save`` on
    # ``object``, which anyio's lazily created classes must not see (runtime/server/cli.py).
    from nnsight.remote import frames

    return frames


class FrameStream:
    """The streamed response: each ``(chunk, last)`` of ``body`` as it comes; ``cleanup`` runs however
    it ends. The last chunk goes out with the body's end in one write: a separate write of the end
    would wake the client a second time, and the client reads to the end before it returns.

    Written against ASGI directly rather than as Starlette's ``StreamingResponse``, which watches for
    the client leaving in an anyio task group whose cancellation formats the task's ``repr`` (about
    0.2 ms of the HTTP thread per job, on the round trip's critical path). A plain task does the same
    watch: when the client goes away mid-stream, the stream is cancelled and ends quietly.
    """

    HEADERS = [(b"content-type", MEDIA_TYPE.encode()), (b"cache-control", b"no-store"),
               (b"x-accel-buffering", b"no")]

    def __init__(self, body: AsyncIterator[Tuple[bytes, bool]], cleanup: Callable[[], None]) -> None:
        self.body = body
        self.cleanup = cleanup
        self.headers = self.HEADERS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streaming = asyncio.current_task()
        state = {"ended": False, "left": False}

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if not state["ended"] and streaming is not None:
                state["left"] = True
                streaming.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
            last = False
            async for chunk, last in self.body:
                await send({"type": "http.response.body", "body": chunk, "more_body": not last})
                if last:
                    break
            if not last:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not state["left"]:
                raise  # the server is stopping
            streaming.uncancel()  # (the client left: this task's own cancellation, now handled)
        finally:
            state["ended"] = True
            watcher.cancel()
            try:
                await self.body.aclose()  # type: ignore[attr-defined]
            finally:
                self.cleanup()


def asks_ack_in_headers(headers: Any) -> bool:
    """Did the client ask for the acknowledgement in the response's headers (docs/protocol.md)?"""
    return headers.get(_frames().ACK_REQUEST) == "headers"


def job_stream(service: Any, job_id: str, queue: "asyncio.Queue[Dict[str, Any]]",
               ack: Dict[str, Any], ack_in_headers: bool = False) -> FrameStream:
    """The response for a stored job whose frames ``queue`` receives (subscribed before the store).

    ``ack_in_headers`` (the client asked, docs/protocol.md): the acknowledgement goes in the
    response's headers instead of a first frame, so the client is woken once for both."""
    frames = _frames()
    woken = []

    def wake() -> None:
        if not woken:
            woken.append(True)
            service.worker.wake()

    def cleanup() -> None:
        wake()  # the job runs whether or not anyone still listens
        service.hub.unsubscribe(job_id, queue)
        if not service.hub.is_watched(job_id):  # nobody left to run a tracer.local() block it waits on
            service.worker.local.abandon(job_id)

    async def body() -> AsyncIterator[Tuple[bytes, bool]]:
        if not ack_in_headers:
            yield frames.pack_frame(ack), False
        wake()  # (the acknowledgement is written: the job may start)
        while True:
            try:
                frame = await asyncio.wait_for(queue.get(), frames.KEEPALIVE_S)
            except asyncio.TimeoutError:
                yield frames.pack_frame({"id": job_id, "status": frames.KEEPALIVE}), False
                continue
            batch = [frame]  # frames published back to back (DISPATCHED, RUNNING) go out in one write
            while frame["status"] not in events.TERMINAL and not queue.empty():
                frame = queue.get_nowait()
                batch.append(frame)
            terminal = frame["status"] in events.TERMINAL
            yield b"".join(_record(f) for f in batch), terminal
            if terminal:
                return

    stream = FrameStream(body(), cleanup)
    if ack_in_headers:
        stream.headers = FrameStream.HEADERS + [(frames.ACK_ID.encode(), job_id.encode("ascii")),
                                                (frames.ACK_POSITION.encode(), str(int(ack["position"])).encode())]
    return stream


def _record(frame: Dict[str, Any]) -> bytes:
    """One frame's bytes; a small result follows its COMPLETED frame as a binary part."""
    frames = _frames()
    if frame["status"] == events.LOCAL:  # only the WebSocket carries the client's answer: the
        frame = {k: v for k, v in frame.items() if k != "data"}  # client says so and leaves
    result = frame.get("result")
    if "result" in frame:
        frame = {k: v for k, v in frame.items() if k != "result"}  # (the hub's frame is shared)
    if isinstance(result, bytes) and len(result) <= frames.MAX_INLINE_BYTES:
        frame["inline"] = True
        frame["size"] = len(result)
        return frames.pack_frame(frame) + frames.pack_part(result)
    return frames.pack_frame(frame)
