"""HTTP and WebSocket client of an nnsight server (the protocol of docs/protocol.md).

Torch-free: it sends request bytes and receives result bytes and status frames.
``host`` is ``CONFIG.API.HOST`` / ``NDIF_HOST`` unless given, the key
``CONFIG.API.APIKEY`` / ``NDIF_API_KEY`` (``nnsight.login(key)`` sets it).
"""
import json
import os
import platform
import threading
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterator, Optional

from .errors import RemoteError

KEY_HEADER = "ndif-api-key"


def default_host() -> str:
    """``CONFIG.API.HOST`` (set in code, or from NNSIGHT_HOST / NDIF_HOST, or the config file)."""
    from ..config import CONFIG

    return CONFIG.API.HOST


def default_key() -> str:
    """``CONFIG.API.APIKEY`` (``nnsight.login(key)``, NNSIGHT_API_KEY / NDIF_API_KEY, the config file)."""
    from ..config import CONFIG

    return CONFIG.API.APIKEY


def base_url(host: str) -> str:
    """``localhost:8000`` -> ``http://localhost:8000`` (an explicit scheme is kept)."""
    host = host.strip().rstrip("/")
    return host if "://" in host else "http://" + host


def _version() -> str:
    try:
        from compiler import __version__

        return __version__
    except Exception:  # noqa: BLE001
        return "unknown"


# (pid, url, headers, timeout) -> httpx.Client: one kept-alive connection pool per server for every
# Client of this process, so a trace after the first reuses its TCP connection (and builds no new
# httpx.Client, ~0.3 ms). Bounded: the oldest pool is closed beyond _POOLS_BOUND servers. Keyed by
# pid: a forked child opens its own connections.
_POOLS: "OrderedDict[tuple, Any]" = OrderedDict()
_POOLS_BOUND = 8
_POOLS_LOCK = threading.Lock()


def _pool(url: str, headers: Dict[str, str], timeout: float) -> Any:
    key = (os.getpid(), url, tuple(sorted(headers.items())), timeout)
    with _POOLS_LOCK:
        http = _POOLS.get(key)
        if http is not None and not http.is_closed:
            _POOLS.move_to_end(key)
            return http
        import httpx

        # Plain http needs no TLS context (building one loads the CA bundle: ~50 ms a client), and
        # goes through the leaner transport of transport.py.
        plain = url.startswith("http://")
        transport = None
        if plain:
            from .transport import StdlibTransport

            transport = StdlibTransport()
        http = _POOLS[key] = httpx.Client(base_url=url, headers=headers, timeout=timeout, verify=not plain,
                                          transport=transport)
        while len(_POOLS) > _POOLS_BOUND:
            _, oldest = _POOLS.popitem(last=False)
            oldest.close()
        return http


def close_connections() -> None:
    """Close every kept-alive connection of this process (they reopen on the next call)."""
    with _POOLS_LOCK:
        while _POOLS:
            _POOLS.popitem()[1].close()


_JOB_ID_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_")


def _acknowledgement(frame: Any) -> Dict[str, Any]:
    """The first frame of a job's stream (or a plain 202's body): its id must be a plain token."""
    from .frames import StreamRefused

    job_id = frame.get("id") if isinstance(frame, dict) else None
    if not isinstance(job_id, str) or not 0 < len(job_id) <= 128 or not set(job_id) <= _JOB_ID_CHARS:
        raise StreamRefused("the acknowledgement names no valid job id")
    return frame


def _drain(chunks: Iterator[bytes], limit: int = 1 << 16) -> None:
    """Read what is left of a body (a few bytes: its end); a server sending more is cut off."""
    left = limit
    for chunk in chunks:
        left -= len(chunk)
        if left < 0:
            return


class Client:
    """One server: ``Client(host, api_key)``; every method is one HTTP call."""

    def __init__(self, host: Optional[str] = None, api_key: Optional[str] = None, timeout: float = 60.0) -> None:
        self.url = base_url(host or default_host())
        self.api_key = api_key if api_key is not None else default_key()
        headers = {"nnsight-version": _version(), "python-version": platform.python_version()}
        if self.api_key:
            headers[KEY_HEADER] = self.api_key
        self.headers = headers
        self.timeout = timeout
        self._http: Any = None

    @property
    def http(self) -> Any:
        """The HTTP connection pool of this server (shared, see :func:`_pool`)."""
        if self._http is None or self._http.is_closed:
            self._http = _pool(self.url, self.headers, self.timeout)
        return self._http

    def close(self) -> None:
        """Done with this client (its kept-alive connections stay in the shared pool)."""
        self._http = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- calls ---------------------------------------------------------------------------------

    def _check(self, response: Any) -> Any:
        if response.status_code < 400:
            return response
        try:
            data = response.json()
        except ValueError:
            data = {"message": response.text[:500]}
        if not isinstance(data, dict):
            data = {"message": str(data)}
        raise RemoteError("%s (HTTP %d from %s)" % (data.get("message", "error"), response.status_code, self.url),
                          status=response.status_code, code=str(data.get("code", "")),
                          hint=str(data.get("hint", "")), data=data)

    def _get(self, path: str) -> Any:
        import httpx

        try:
            return self._check(self.http.get(path))
        except httpx.TransportError as error:
            raise RemoteError("cannot reach the nnsight server at %s: %s" % (self.url, error),
                              hint="start one with `nnsight-server serve --model ...`, or set CONFIG.API.HOST "
                                   "/ NDIF_HOST to its address") from None

    def ping(self) -> bool:
        return self._get("/ping").json().get("status") == "ok"

    def env(self) -> Dict[str, Any]:
        return self._get("/v1/env").json()

    def models(self) -> Any:
        return self._get("/v1/models").json()["models"]

    def model_config(self, name: str) -> Dict[str, str]:
        return self._get("/v1/models/%s/config" % name).json()["files"]

    def submit(self, payload: bytes) -> Dict[str, Any]:
        import httpx

        try:
            response = self.http.post("/v1/requests", content=payload,
                                      headers={"content-type": "application/octet-stream"})
        except httpx.TransportError as error:
            raise RemoteError("cannot reach the nnsight server at %s: %s" % (self.url, error),
                              hint="start one with `nnsight-server serve --model ...`, or set CONFIG.API.HOST "
                                   "/ NDIF_HOST to its address") from None
        return self._check(response).json()

    def submit_stream(self, payload: bytes) -> Iterator[Dict[str, Any]]:
        """Submit and follow the job in one HTTP round trip (``POST /v1/requests?stream=1``).

        Yields the job's status frames: first the acknowledgement (``{"id", "status": "QUEUED",
        "position"}``, sent once the job is stored), then as :meth:`events` does, a small result
        inline with COMPLETED. No WebSocket handshake: the request rides the kept-alive pool.
        Raises :class:`RemoteError` for a refusal or a stream that breaks the framing rules, and
        :class:`~.frames.StreamLost` when the body ends early (the job is stored: follow it by id).
        A server without the streamed path answers the plain ``202``; the job is then followed over
        the WebSocket (the same frames).
        """
        import httpx

        from . import frames

        timeout = httpx.Timeout(self.timeout, read=max(self.timeout, 4 * frames.KEEPALIVE_S))
        acknowledged = False
        try:
            with self.http.stream("POST", "/v1/requests?stream=1", content=payload, timeout=timeout,
                                  headers={"content-type": "application/octet-stream",
                                           frames.ACK_REQUEST: "headers"}) as response:
                if response.status_code >= 400:
                    response.read()
                    self._check(response)
                if response.headers.get("content-type", "").split(";")[0].strip() != frames.MEDIA_TYPE:
                    response.read()  # an older server: the plain 202 acknowledgement
                    reply = _acknowledgement(response.json())
                    acknowledged = True
                    yield reply
                    yield from self.events(reply["id"], inline_result=True)
                    return
                ack = frames.header_acknowledgement(response.headers)
                if ack is not None:  # (the headers carry it: one wake-up less than a first frame)
                    reply = _acknowledgement(ack)
                    acknowledged = True
                    yield reply
                chunks = response.iter_raw()
                for frame in frames.read_frames(chunks):
                    if not acknowledged:
                        frame = _acknowledgement(frame)
                        acknowledged = True
                    if frame["status"] in frames.TERMINAL:
                        _drain(chunks)  # the body's end (a caller stops here): the connection is reused
                    yield frame
        except frames.StreamRefused as error:
            raise RemoteError("the server at %s sent a malformed job stream: %s" % (self.url, error),
                              code="bad_stream", hint="the server is not an nnsight server, or a proxy "
                              "altered the response") from None
        except (httpx.TransportError, frames.StreamLost) as error:
            if not acknowledged:
                raise RemoteError("the connection to the nnsight server at %s failed before it acknowledged "
                                  "the job: %s" % (self.url, error),
                                  hint="check the server is running (`nnsight-server serve --model ...`) and "
                                       "CONFIG.API.HOST / NDIF_HOST; submit again") from None
            raise frames.StreamLost(str(error)) from None

    def status(self, job_id: str) -> Dict[str, Any]:
        return self._get("/v1/requests/%s" % job_id).json()

    def result(self, job_id: str, progress: Optional[Callable[[Optional[int]], Any]] = None) -> bytes:
        """The encoded result; ``progress(total)`` may return a callback fed each chunk's size."""
        if progress is None:
            return self._get("/v1/requests/%s/result" % job_id).content
        import httpx

        try:
            with self.http.stream("GET", "/v1/requests/%s/result" % job_id) as response:
                if response.status_code >= 400:
                    response.read()
                    self._check(response)
                total = response.headers.get("content-length")
                advance = progress(int(total) if total and total.isdigit() else None)
                chunks = []
                for chunk in response.iter_bytes(1 << 16):
                    chunks.append(chunk)
                    if advance is not None:
                        advance(len(chunk))
                return b"".join(chunks)
        except httpx.TransportError as error:
            raise RemoteError("cannot reach the nnsight server at %s: %s" % (self.url, error)) from None

    def cancel(self, job_id: str) -> Dict[str, Any]:
        return self._check(self.http.delete("/v1/requests/%s" % job_id)).json()

    def events(self, job_id: str, timeout: Optional[float] = None,
               inline_result: bool = False) -> Iterator[Dict[str, Any]]:
        """The job's status frames until its last one (COMPLETED, ERROR or CANCELLED).

        ``inline_result``: a small result comes with the COMPLETED frame (``frame["result"]``,
        bytes), which saves the GET of :meth:`result`.
        """
        from websockets.sync.client import connect

        url = self.url.replace("http", "ws", 1) + "/v1/requests/%s/events" % job_id
        if inline_result:
            url += "?inline_result=1"
        headers = {KEY_HEADER: self.api_key} if self.api_key else {}
        with connect(url, additional_headers=headers, open_timeout=timeout, max_size=None) as socket:
            for message in socket:
                frame = json.loads(message)
                if frame.get("status") == "LOCAL":  # a tracer.local() block: its values follow as bytes
                    frame["data"] = socket.recv()
                    frame["reply"] = socket.send  # the LOCAL_RESULT goes back on this socket
                elif frame.get("inline"):
                    data = socket.recv()
                    frame["result"] = data if isinstance(data, bytes) else data.encode("latin-1")
                yield frame
                if frame.get("status") in ("COMPLETED", "ERROR", "CANCELLED"):
                    return
