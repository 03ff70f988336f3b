"""An httpx transport for plain-``http://`` servers, on the standard library's HTTP/1.1 client.

The client keeps httpx's API (timeouts, errors, proxies from the environment, content
decoding); this only replaces how bytes reach the socket. Two reasons, both measured on a
loopback round trip (docs/performance.md):

* **One write per request.** httpx's default transport (and ``http.client``) write a request's
  head and its body separately; each write wakes the server, and on a small machine the woken
  process often takes the writer's CPU. Here the head and a body of bytes go out in one ``send``.
* **Less work per response**: about 0.3 ms less client CPU per call, which matters on a round
  trip whose target is a few milliseconds.

TLS servers keep httpx's own transport. A response is attacker-written bytes: ``http.client``
bounds the status line and each header line (64 KiB) and the number of headers (100), and
every error it raises on a malformed response is an :class:`httpx.RemoteProtocolError`, so
callers see the same exception types as with httpx's transport.

Kept-alive connections are pooled per host (at most :data:`MAX_IDLE` idle ones). A pooled
connection that the server has closed meanwhile, or that has unread bytes, is never reused:
its socket is polled first, as httpcore does.
"""
import http.client
import select
import socket
import threading
from typing import Any, Dict, Iterator, List, Optional, Tuple

import httpx

MAX_IDLE = 16  # idle kept-alive connections per host (16 concurrent clients reuse theirs)

_Key = Tuple[str, int]


def _readable(sock: Optional[socket.socket]) -> bool:
    """Does ``sock`` have something to read (an end of stream, stray bytes) while idle?"""
    if sock is None:
        return True
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll() on this platform, or a closed socket
        try:
            return bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True


def _transport_error(error: BaseException, reading: bool) -> httpx.TransportError:
    if isinstance(error, socket.timeout):
        return (httpx.ReadTimeout if reading else httpx.WriteTimeout)(str(error) or "timed out")
    if isinstance(error, (http.client.HTTPException, ValueError)):  # a malformed, cut or oversized response
        return httpx.RemoteProtocolError("%s: %s" % (type(error).__name__, error))
    return (httpx.ReadError if reading else httpx.WriteError)("%s: %s" % (type(error).__name__, error))


class _Connection(http.client.HTTPConnection):
    """An HTTP/1.1 connection that sends a request's head and body in one write."""

    _gathered: Optional[List[bytes]] = None

    def send(self, data: Any) -> None:
        if self._gathered is not None and isinstance(data, bytes):
            self._gathered.append(data)
        else:
            super().send(data)

    def send_request(self, method: str, target: str, headers: List[Tuple[bytes, bytes]], body: bytes) -> None:
        """The request, head and body gathered into one ``send`` (http.client checks each header)."""
        self.putrequest(method, target, skip_host=True, skip_accept_encoding=True)  # (httpx set both)
        for name, value in headers:
            self.putheader(name.decode("latin-1"), value.decode("latin-1"))
        self._gathered = []
        try:
            self.endheaders(body or None)
            data = b"".join(self._gathered)
        finally:
            self._gathered = None
        super().send(data)


class _ResponseStream(httpx.SyncByteStream):
    """A response body read from its connection; the connection goes back to the pool once the
    body was read to its end (else it is closed: a reader that stopped early leaves bytes in it)."""

    def __init__(self, pool: "StdlibTransport", key: _Key, conn: "_Connection",
                 response: http.client.HTTPResponse) -> None:
        self._pool = pool
        self._key = key
        self._conn: Optional[_Connection] = conn
        self._response = response
        self._ended = False  # the body was read to its end

    def __iter__(self) -> Iterator[bytes]:
        response = self._response
        while True:
            try:
                data = response.read1(1 << 16)
            except (OSError, ValueError, http.client.HTTPException) as error:
                self.close()
                raise _transport_error(error, reading=True) from None
            if data:
                yield data
                continue
            left = response.length  # (http.client ends a body cut short quietly: here it is an error)
            if left:
                self.close()
                raise httpx.RemoteProtocolError("the server closed the connection %d bytes before the end of "
                                                "the body it announced" % left)
            self._ended = True
            return

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        response = self._response
        reusable = self._ended and not response.will_close
        response.close()
        if reusable:
            self._pool._release(self._key, conn)
        else:
            conn.close()


class StdlibTransport(httpx.BaseTransport):
    """``httpx.Client(transport=StdlibTransport())`` for ``http://`` URLs (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: Dict[_Key, List[_Connection]] = {}
        self._closed = False

    def _acquire(self, key: _Key, connect_timeout: Optional[float]) -> _Connection:
        while True:
            with self._lock:
                idle = self._idle.get(key)
                conn = idle.pop() if idle else None
            if conn is None:
                return _Connection(key[0], key[1], timeout=connect_timeout)
            if not _readable(conn.sock):
                return conn
            conn.close()  # closed by the server while idle (or holding stray bytes): a new one

    def _release(self, key: _Key, conn: _Connection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if not self._closed and len(idle) < MAX_IDLE:
                idle.append(conn)
                return
        conn.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol("StdlibTransport carries plain http:// only, not %r" % url.scheme)
        timeouts: Dict[str, Any] = request.extensions.get("timeout", {})
        key = (url.host, url.port or 80)
        conn = self._acquire(key, timeouts.get("connect"))
        body = request.read()
        try:
            if conn.sock is None:
                try:
                    conn.connect()
                except socket.timeout as error:
                    raise httpx.ConnectTimeout(str(error) or "timed out") from None
                except OSError as error:
                    raise httpx.ConnectError("%s: %s" % (type(error).__name__, error)) from None
            conn.sock.settimeout(timeouts.get("write"))
            try:
                conn.send_request(request.method, url.raw_path.decode("ascii"), request.headers.raw, body)
            except ValueError as error:  # a header http.client refuses (a line break in a value...)
                raise httpx.LocalProtocolError(str(error)) from None
            except (OSError, http.client.HTTPException) as error:
                raise _transport_error(error, reading=False) from None
            conn.sock.settimeout(timeouts.get("read"))
            try:
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as error:
                raise _transport_error(error, reading=True) from None
        except BaseException:
            conn.close()
            raise
        headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in response.getheaders()]
        return httpx.Response(response.status, headers=headers,
                              stream=_ResponseStream(self, key, conn, response),
                              extensions={"http_version": b"HTTP/1.1", "reason_phrase": response.reason.encode(
                                  "latin-1", "replace")})

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()
