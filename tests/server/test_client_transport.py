"""The client's transport for plain-http servers (nnsight/remote/transport.py): one write per
request, kept-alive connections reused only when safe, and a hostile or broken server's response
turned into httpx's own transport errors (never a hang, never a half-read connection reused)."""
import socket
import threading
import time

import httpx
import pytest

from nnsight.remote.transport import StdlibTransport
from rawhttp import read_request


class RawServer:
    """A loopback HTTP server whose answers the test writes: ``answer(request_head, body)`` returns
    the bytes to send (None: close the connection). Counts connections; stops by itself."""

    def __init__(self, answer, keep_open=True):
        self.answer = answer
        self.keep_open = keep_open
        self.connections = 0
        self.requests = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(10)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn):
        conn.settimeout(10)
        buffered = b""
        with conn:
            for _ in range(50):  # bounded: a test sends a few requests per connection
                request = read_request(conn, buffered)
                if request is None:
                    return
                lines, body, buffered = request
                self.requests.append((lines, body))
                reply = self.answer(lines, body)
                if reply is None:
                    return
                try:
                    conn.sendall(reply)
                except OSError:
                    return
                if not self.keep_open:
                    return

    def close(self):
        self.sock.close()


def ok(body=b"hello"):
    return lambda lines, request_body: b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


@pytest.fixture
def client():
    made = []

    def make(url, **kwargs):
        c = httpx.Client(base_url=url, transport=StdlibTransport(), **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def test_requests_reuse_one_kept_alive_connection_and_carry_head_and_body_in_one_write(client):
    server = RawServer(lambda lines, body: b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
    try:
        http = client(server.url)
        assert http.post("/a", content=b"x" * 3000).content == b"x" * 3000
        transport = http._transport  # (the test looks at its own pool)
        (conn,), = transport._idle.values()
        writes = []

        class Recording:
            def __init__(self, sock):
                self.sock = sock

            def sendall(self, data):
                writes.append(bytes(data))
                return self.sock.sendall(data)

            def __getattr__(self, name):
                return getattr(self.sock, name)

        conn.sock = Recording(conn.sock)
        assert http.post("/b", content=b"y" * 3000).content == b"y" * 3000
        assert len(writes) == 1 and writes[0].startswith(b"POST /b HTTP/1.1\r\n") and writes[0].endswith(b"y" * 3000)
        assert http.get("/c?q=1").content == b""
        assert server.connections == 1
        assert [lines[0] for lines, _ in server.requests] == ["POST /a HTTP/1.1", "POST /b HTTP/1.1",
                                                             "GET /c?q=1 HTTP/1.1"]
        host = [l for l in server.requests[0][0] if l.lower().startswith("host:")]
        assert [l.lower() for l in host] == ["host: %s" % server.url[len("http://"):]]  # httpx's Host header, once
    finally:
        server.close()


def test_a_connection_the_server_closed_while_idle_is_not_reused(client):
    server = RawServer(ok(), keep_open=False)  # closes after each answer, without saying so
    try:
        http = client(server.url)
        for _ in range(3):
            assert http.get("/").content == b"hello"
            time.sleep(0.05)  # (the close reaches the client's socket)
        assert server.connections == 3
    finally:
        server.close()


def test_a_response_not_read_to_its_end_closes_its_connection(client):
    server = RawServer(ok(b"z" * 100_000))
    try:
        http = client(server.url)
        with http.stream("GET", "/") as response:
            next(response.iter_raw())  # reads a part only, then leaves
        assert http.get("/").content == b"z" * 100_000  # a fresh connection: not the rest of the first
        assert server.connections == 2
    finally:
        server.close()


HOSTILE = {
    "a header line over 64 KiB": b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * 70_000 + b"\r\n\r\n",
    "more than 100 headers": b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-%d: 1\r\n" % i for i in range(150)) + b"\r\n",
    "not HTTP": b"SSH-2.0-OpenSSH_9.0\r\n\r\n",
    "a body cut short": b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nshort",
    "a bad chunk size": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n",
    "closed before answering": None,
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_response_is_an_httpx_transport_error(client, case):
    reply = HOSTILE[case]
    server = RawServer(lambda lines, body: reply, keep_open=False)
    try:
        http = client(server.url, timeout=5)
        with pytest.raises(httpx.TransportError):
            with http.stream("GET", "/") as response:
                for _ in response.iter_raw():
                    pass
        assert not http._transport._idle.get(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))  # nothing kept
    finally:
        server.close()


def test_a_silent_server_times_out_and_a_closed_port_refuses(client):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts (the kernel does), never answers
    try:
        http = client("http://127.0.0.1:%d" % silent.getsockname()[1], timeout=httpx.Timeout(5, read=0.3))
        start = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            http.get("/")
        assert time.monotonic() - start < 3
    finally:
        silent.close()
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with pytest.raises(httpx.ConnectError):
        client("http://127.0.0.1:%d" % port).get("/")


def test_the_transport_carries_plain_http_only():
    with httpx.Client(transport=StdlibTransport()) as http:
        with pytest.raises(httpx.UnsupportedProtocol):
            http.get("https://127.0.0.1:1/")


def test_the_client_pool_uses_it_for_http_and_the_round_trip_still_works(server, api_key, gpt2, remote_config):
    from nnsight.remote.client import Client

    with Client(server.host, api_key) as c:
        assert isinstance(c.http._transport, StdlibTransport)
    with gpt2.trace("Hello world", remote=True) as tracer:
        out = gpt2.lm_head.output.save()
    with gpt2.trace("Hello world"):
        expected = gpt2.lm_head.output.save()
    assert tracer.backend.transport == "stream" and (out - expected).abs().max().item() == 0
