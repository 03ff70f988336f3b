"""The HTTP API (Starlette): the routes of ``docs/protocol.md``.

Every refusal is an :class:`ApiError` answered as JSON ``{code, message, hint}``
with its status. A request is admitted (decoded, verified, version-gated) and
persisted before the 202 that acknowledges it (or, with ``?stream=1``, before
the first frame of the streamed body: :mod:`.streamed`).
"""
import asyncio
import contextlib
import json
import logging
import platform
import sys
import uuid
from typing import Any, Dict, Optional

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

import compiler
from compiler.ir.errors import IRError, IRVersionError
from compiler.ir.version import IR_VERSION
from runtime import accept
from runtime.gate import LanguageLevelError

from . import audit, events, keys, streamed
from . import metrics as server_metrics
from .config import ServerConfig
from .errors import ApiError
from .events import EventHub
from .models import Models
from .store import FINISHED, QUEUED, RUNNING, Store
from .worker import Worker

log = logging.getLogger("nnsight.server")

PROTOCOL_VERSION = 1
KEY_HEADER = "ndif-api-key"


class Service:
    """Everything one server process holds: settings, store, models, worker, event hub."""

    def __init__(self, config: ServerConfig, store: Store, models: Models, worker: Worker, hub: EventHub) -> None:
        self.config = config
        self.store = store
        self.models = models
        self.worker = worker
        self.hub = hub

    def key_id(self, key: Optional[str]) -> Optional[str]:
        """The caller's key id (None with --no-auth); 401 for a missing or unknown key."""
        if not self.config.auth:
            return None
        key_id = keys.check(self.store, key)
        if key_id is None:
            raise ApiError(401, "bad_api_key", "missing or unknown API key" if key else "no API key was sent",
                           "send your key in the %r header (nnsight.login(key), CONFIG.API.APIKEY or "
                           "NDIF_API_KEY); the operator creates keys with `nnsight-server keys create`" % KEY_HEADER)
        return key_id

    def job(self, job_id: str, key_id: Optional[str]) -> Dict[str, Any]:
        job = self.store.get(job_id)
        if job is None or (self.config.auth and job["key_id"] != key_id):
            raise ApiError(404, "unknown_request", "no request %r on this server" % job_id,
                           "finished requests are deleted after %gs" % self.config.result_ttl_s)
        return job

    def status(self, job: Dict[str, Any]) -> Dict[str, Any]:
        body = {"id": job["id"], "status": job["status"], "model": job["model"],
                "position": self.store.position(job["id"]) if job["status"] == QUEUED else None,
                "error": job["error"], "logs": self.store.logs(job["id"]), "created": job["created"],
                "started": job["started"], "finished": job["finished"]}
        replica_of = getattr(self.worker, "replica_of", None)  # on Ray (runtime/server/replicas/)
        if replica_of is not None:
            body["attempts"] = job["attempts"]
            body["replica"] = replica_of(job["id"]) if job["status"] == RUNNING else None
        return body


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _service(request: Any) -> Service:
    return request.app.state.service


async def ping(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def env(request: Request) -> Response:
    return JSONResponse({
        "protocol": PROTOCOL_VERSION,
        "python": platform.python_version(),
        "nnsight": compiler.__version__,
        "ir_versions": [1, IR_VERSION],
        "python_runtime": list(sys.version_info[:2]),
        "server_modules": _server_modules(),
        "packages": _packages(),
    })


def _server_modules() -> Any:
    """The server-module table the policy enforces (compiler/data/server_modules.json)."""
    from importlib import resources

    return json.loads((resources.files("compiler") / "data" / "server_modules.json").read_text("utf-8"))


def _packages() -> Dict[str, str]:
    from importlib import metadata

    found = {}
    for name in ("torch", "transformers", "numpy", "tokenizers", "safetensors", "starlette", "uvicorn"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


async def list_models(request: Request) -> Response:
    service = _service(request)
    replicas = getattr(service.worker, "describe_replicas", None)  # on Ray (runtime/server/replicas/)
    listing = []
    for h in service.models.by_name.values():
        entry = {"name": h.name, "source": h.source, "key": h.key_class + ":" + '{"repo_id": "%s"}' % h.name,
                 "engine": h.engine, "state": h.state, "queue": service.store.queue_length(h.name)}
        if h.error:
            entry["error"] = h.error
        if replicas is not None:
            entry["replicas"] = replicas(h.name)
        listing.append(entry)
    return JSONResponse({"models": listing})


async def model_config(request: Request) -> Response:
    service = _service(request)
    hosted = service.models.get(request.path_params["name"])
    files = await run_in_threadpool(hosted.config_files)
    return JSONResponse({"name": hosted.name, "source": hosted.source, "files": files})


async def metrics(request: Request) -> Response:
    """Registry sizes and bounds, memory, queue and data-dir size (:mod:`.metrics`); needs a key."""
    service = _service(request)
    service.key_id(request.headers.get(KEY_HEADER))
    collect = request.query_params.get("collect") == "1"
    return JSONResponse(await run_in_threadpool(server_metrics.snapshot, service, collect))


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    too_big = ApiError(413, "too_large", "the request body is larger than this server's limit of %d bytes" % limit,
                       "save less, or send large inputs as smaller pieces in several requests")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


INLINE_WORK_BYTES = 256 * 1024


async def _off_loop(size: int, fn: Any, *args: Any) -> Any:
    """``fn(*args)`` for a request body of ``size`` bytes: in a worker thread when the body is big
    (decoding or writing it would hold up the event loop), on the event loop otherwise (a small
    request's decode and write take ~0.2 ms; the two thread hops cost more, several ms each on a
    loaded machine)."""
    if size <= INLINE_WORK_BYTES:
        return fn(*args)
    return await run_in_threadpool(fn, *args)


def _admit(payload: bytes):
    try:
        return accept.admit(payload)
    except IRVersionError as error:
        raise ApiError(400, "ir_version", str(error), "this server accepts IR versions 1 to %d; upgrade or "
                       "downgrade nnsight on the client to match" % IR_VERSION, accepted=[1, IR_VERSION])
    except LanguageLevelError as error:
        raise ApiError(400, "python_version", str(error), "write the code for Python %d.%d or older"
                       % sys.version_info[:2])
    except IRError as error:
        raise ApiError(400, "malformed_request", "the request is not a valid nnsight request: %s" % error,
                       "send the bytes nnsight's client encodes (the body may have been cut short)")
    except Exception as error:  # noqa: BLE001 - anything a decoder raises on garbage is the client's fault
        raise ApiError(400, "malformed_request", "the request could not be decoded: %s: %s"
                       % (type(error).__name__, error), "send the bytes nnsight's client encodes")


async def submit(request: Request) -> Response:
    service = _service(request)
    config = service.config
    key_id = service.key_id(request.headers.get(KEY_HEADER))
    payload = await _body(request, config.max_request_bytes)
    admitted = await _off_loop(len(payload), _admit, payload)
    hosted = service.models.find(admitted.model)
    if service.store.count(QUEUED) >= config.max_queue:
        raise ApiError(503, "queue_full", "the server's queue is full (%d jobs)" % config.max_queue,
                       "retry after a few seconds", headers={"Retry-After": "5"})
    caller = keys.settings(service.store, config, key_id)  # its tier and limits
    if key_id is not None and service.store.in_flight(key_id) >= caller.max_in_flight:
        raise ApiError(429, "too_many_jobs", "this key already has %d jobs queued or running"
                       % caller.max_in_flight, "wait for some to finish", headers={"Retry-After": "2"})
    job_id = uuid.uuid4().hex
    stream = request.query_params.get("stream") == "1"
    queue = service.hub.subscribe(job_id) if stream else None  # before the store: no frame is missed
    try:
        position = await _off_loop(len(payload), service.store.add_job, job_id, hosted.name, key_id, payload,
                                   caller.tier)
    except BaseException:
        if queue is not None:
            service.hub.unsubscribe(job_id, queue)
        raise
    ack = {"id": job_id, "status": QUEUED, "position": position}
    if queue is not None:
        # (it wakes the worker once the acknowledgement is written)
        return streamed.job_stream(service, job_id, queue, ack, streamed.asks_ack_in_headers(request.headers))
    service.worker.wake()
    return JSONResponse(ack, status_code=202)


async def get_status(request: Request) -> Response:
    service = _service(request)
    key_id = service.key_id(request.headers.get(KEY_HEADER))
    return JSONResponse(service.status(service.job(request.path_params["id"], key_id)))


async def get_result(request: Request) -> Response:
    service = _service(request)
    key_id = service.key_id(request.headers.get(KEY_HEADER))
    job = service.job(request.path_params["id"], key_id)
    if job["status"] != "COMPLETED":
        raise ApiError(409, "not_completed", "request %s is %s, it has no result" % (job["id"], job["status"]),
                       "wait for COMPLETED (GET /v1/requests/{id} or the events stream)", job_status=job["status"],
                       error=job["error"])
    data = await run_in_threadpool(service.store.read_blob, job["id"], "result")
    if data is None:
        raise ApiError(404, "result_expired", "the result of request %s is gone" % job["id"], "submit it again")
    return Response(data, media_type="application/octet-stream")


async def cancel(request: Request) -> Response:
    service = _service(request)
    key_id = service.key_id(request.headers.get(KEY_HEADER))
    job = service.job(request.path_params["id"], key_id)
    status = service.store.cancel(job["id"])
    if status == "CANCELLED" and job["status"] == QUEUED:
        service.hub.publish(job["id"], events.CANCELLED)
    elif status == RUNNING:
        service.worker.cancel(job["id"])
    return JSONResponse({"id": job["id"], "status": status})


async def job_events(websocket: WebSocket) -> None:
    service = _service(websocket)
    job_id = websocket.path_params["id"]
    try:
        key_id = service.key_id(websocket.headers.get(KEY_HEADER) or websocket.query_params.get("api_key"))
        service.job(job_id, key_id)
    except ApiError as error:
        await websocket.close(code=4000 + error.status, reason=error.message[:120])
        return
    await websocket.accept()
    queue = service.hub.subscribe(job_id)
    try:
        job = service.store.get(job_id)
        if job is None:
            await websocket.close(code=4404)
            return
        replay = events.history(job, service.store.position(job_id))
        finished = job["status"] in FINISHED
        for frame in replay[:-1] if finished else replay:  # the lifecycle so far, in order
            await websocket.send_json(frame)
        logs = service.store.logs(job_id)
        for n, line in enumerate(logs):
            await websocket.send_json({"id": job_id, "status": events.LOG, "n": n, "line": line})
        inline = websocket.query_params.get("inline_result") == "1"
        if finished:
            frame = dict(replay[-1])
            if frame["status"] == events.COMPLETED and inline:
                frame["result"] = await run_in_threadpool(service.store.read_blob, job_id, "result")
            elif frame["status"] == events.COMPLETED:  # as the live frame: the result's size
                frame["size"] = service.store.blob_size(job_id, "result")
            await _send_frame(websocket, frame, inline)
            await websocket.close()
            return
        last = replay[-1]
        waiting = service.worker.local.waiting(job_id)  # a tracer.local() block asked before we connected
        sent_block = None
        if waiting is not None:
            sent_block = waiting["block"]
            await _send_frame(websocket, waiting, inline)
        replies = asyncio.ensure_future(_local_replies(websocket, service, job_id))
        try:
            while True:
                frame = await queue.get()
                if events.is_replayed(frame, last, len(logs)):
                    continue
                if frame["status"] == events.LOCAL and frame.get("block") == sent_block:
                    continue  # published while we subscribed: already sent as the waiting block
                if frame["status"] not in (events.LOG, events.LOCAL):
                    last = frame
                await _send_frame(websocket, frame, inline)
                if frame["status"] in events.TERMINAL:
                    await websocket.close()
                    return
        finally:
            replies.cancel()
    except WebSocketDisconnect:
        return
    finally:
        service.hub.unsubscribe(job_id, queue)
        if not service.hub.is_watched(job_id):  # nobody left to run a tracer.local() block it waits on
            service.worker.local.abandon(job_id)


async def _local_replies(websocket: WebSocket, service: Service, job_id: str) -> None:
    """Binary messages from the job's client: LOCAL_RESULTs for its pending tracer.local() block.

    The socket was opened with the job's own key; the exchange takes a reply only for the
    block the job waits on, and refuses oversized or malformed ones (the job then times out).
    """
    while True:
        message = await websocket.receive()
        if message.get("type") == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is None:
            continue
        refused = service.worker.local.deliver(job_id, data)
        if refused is not None:
            log.warning("job %s: refused a local block reply: %s", job_id, refused)


INLINE_RESULT_BYTES = (1 << 20) - 1  # (nnsight.remote.frames.MAX_INLINE_BYTES) larger results are fetched with GET .../result (a TTY client shows a download bar for those)


async def _send_frame(websocket: WebSocket, frame: Dict[str, Any], inline: bool) -> None:
    """Send one status frame. A LOCAL frame's bytes follow it as one binary message. A COMPLETED frame may carry the result bytes (``frame["result"]``):
    to a subscriber that asked (``?inline_result=1``) and when small, they follow the frame as one
    binary message (the frame says ``"inline": true``), which saves the client a GET."""
    data = frame.get("data")
    if data is not None:  # a LOCAL frame (tracer.local()): its value bytes follow as one binary message
        await websocket.send_json({k: v for k, v in frame.items() if k != "data"})
        await websocket.send_bytes(data)
        return
    result = frame.get("result")
    if "result" in frame:
        frame = {k: v for k, v in frame.items() if k != "result"}  # (the hub's frame is shared)
    if inline and isinstance(result, bytes) and len(result) <= INLINE_RESULT_BYTES:
        frame["inline"] = True
        frame["size"] = len(result)  # (a replayed COMPLETED frame, rebuilt from the store, has none)
        await websocket.send_json(frame)
        await websocket.send_bytes(result)
        return
    await websocket.send_json(frame)


# Refusals written to the audit log (a 404 for an expired job or a 409 while polling are not refusals).
AUDITED = {"bad_api_key": audit.REFUSED, "ir_version": audit.REFUSED, "python_version": audit.REFUSED,
           "malformed_request": audit.REFUSED, "unknown_model": audit.REFUSED, "unknown_revision": audit.REFUSED,
           "too_large": audit.LIMIT, "queue_full": audit.LIMIT, "too_many_jobs": audit.LIMIT}


async def _on_api_error(request: Any, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    event = AUDITED.get(error.code)
    if event is not None:
        _audit_refusal(request, error, event)
    return _error_response(error)


def _audit_refusal(request: Any, error: ApiError, event: str) -> None:
    service = _service(request)
    presented = request.headers.get(KEY_HEADER)
    who = None
    if service.config.auth and presented:
        who = keys.check(service.store, presented) or keys.fingerprint(presented)
    audit.record(service.store, event, who, None, error.code,
                 "%s %s: %s" % (request.method, request.url.path, error.message))


async def _on_internal_error(request: Any, error: Exception) -> Response:
    """A bug in the server: still a JSON answer, with the exception's type and message."""
    return JSONResponse({"code": "internal_error", "message": "%s: %s" % (type(error).__name__, error),
                         "hint": "this is a server bug; the server's log has the traceback"}, status_code=500)


def make_app(service: Service) -> Starlette:
    """The ASGI application serving ``service``."""
    routes = [
        Route("/ping", ping),
        Route("/v1/env", env),
        Route("/v1/models", list_models),
        Route("/v1/models/{name:path}/config", model_config),
        Route("/v1/metrics", metrics),
        Route("/v1/requests", submit, methods=["POST"]),
        Route("/v1/requests/{id}", get_status, methods=["GET"]),
        Route("/v1/requests/{id}", cancel, methods=["DELETE"]),
        Route("/v1/requests/{id}/result", get_result),
        WebSocketRoute("/v1/requests/{id}/events", job_events),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        service.hub.bind(asyncio.get_running_loop())
        yield

    app = Starlette(routes=routes, exception_handlers={ApiError: _on_api_error, Exception: _on_internal_error}, lifespan=lifespan)
    app.state.service = service
    return app
