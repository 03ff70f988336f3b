"""A blocking job in one HTTP round trip (``POST /v1/requests?stream=1``): the acknowledgement
after the store, the live frames and LOG lines, the small result inline and the large one by GET,
the user's error line, a client that leaves mid-stream, and hostile streams refused cleanly."""
import json
import socket
import struct
import threading
import time

import httpx
import pytest

from compiler.ir.request import decode_result
from rawhttp import read_request

PROMPT = "Hello world"
LIFECYCLE = ["QUEUED", "DISPATCHED", "RUNNING", "COMPLETED"]


def _payload(gpt2):
    with gpt2.trace(PROMPT, remote="local") as tracer:
        out = gpt2.lm_head.output.save()  # noqa: F841
    return tracer.remote_payload


def _busy_payload(gpt2, loops):
    """A job that spins ``loops`` times on the server (compiled, never run here)."""
    with gpt2.trace(PROMPT, remote=True, blocking=False) as tracer:
        n = 0
        while n < loops:
            n += 1
    tracer.backend.cancel()
    return tracer.remote_payload


def test_the_stream_acknowledges_a_stored_job_then_sends_its_frames_and_result(server, api_key, gpt2):
    from nnsight.remote import frames

    headers = {"ndif-api-key": api_key}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
        with http.stream("POST", "/v1/requests?stream=1", content=_payload(gpt2)) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == frames.MEDIA_TYPE
            stream = frames.read_frames(response.iter_raw())
            ack = next(stream)
            assert ack["status"] == "QUEUED" and isinstance(ack["position"], int)
            # The job is stored before the acknowledgement: another connection already sees it.
            stored = httpx.get(server.url + "/v1/requests/" + ack["id"], headers=headers).json()
            assert stored["id"] == ack["id"] and stored["status"] in ("QUEUED", "RUNNING", "COMPLETED")
            rest = list(stream)
        statuses = [ack["status"]] + [f["status"] for f in rest]
        assert statuses == LIFECYCLE and all(f["id"] == ack["id"] for f in rest)
        last = rest[-1]
        assert last["inline"] is True and last["size"] == len(last["result"])
        assert last["result"] == http.get("/v1/requests/%s/result" % ack["id"]).content
        decode_result(last["result"])
        # A refusal is a plain JSON error, before any frame.
        refused = http.post("/v1/requests?stream=1", content=b"not a request")
        assert refused.status_code == 400 and refused.json()["code"] == "malformed_request"
        unauthorized = httpx.post(server.url + "/v1/requests?stream=1", content=_payload(gpt2))
        assert unauthorized.status_code == 401 and unauthorized.json()["code"] == "bad_api_key"


def test_the_acknowledgement_comes_in_the_headers_when_asked(server, api_key, gpt2):
    from nnsight.remote import frames

    headers = {"ndif-api-key": api_key, frames.ACK_REQUEST: "headers"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
        with http.stream("POST", "/v1/requests?stream=1", content=_payload(gpt2)) as response:
            assert response.status_code == 200
            job_id = response.headers[frames.ACK_ID]
            assert response.headers[frames.ACK_POSITION].isdigit()
            # Written after the store, like the first frame: another connection already sees the job.
            stored = httpx.get(server.url + "/v1/requests/" + job_id, headers={"ndif-api-key": api_key}).json()
            assert stored["status"] in ("QUEUED", "RUNNING", "COMPLETED")
            rest = list(frames.read_frames(response.iter_raw()))
    assert [f["status"] for f in rest] == LIFECYCLE[1:] and all(f["id"] == job_id for f in rest)
    assert rest[-1]["inline"] is True
    decode_result(rest[-1]["result"])


def test_a_blocking_trace_takes_the_stream_and_shows_log_lines(gpt2, remote_config, capsys):
    with gpt2.trace(PROMPT, remote=True) as tracer:
        print("hello from the stream")
        out = gpt2.lm_head.output.save()
    assert tracer.backend.transport == "stream"
    with gpt2.trace(PROMPT):
        expected = gpt2.lm_head.output.save()
    assert out.shape == expected.shape
    captured = capsys.readouterr()
    assert "[%s] LOG        : hello from the stream" % tracer.backend.job_id in captured.out
    shown = [line.split("] ", 1)[1].split(":")[0] for line in captured.err.splitlines() if line.startswith("[")]
    assert shown == ["RECEIVED"] + LIFECYCLE, captured.err


def test_log_frames_carry_their_index_and_line(server, api_key, gpt2):
    from nnsight.remote.client import Client

    with gpt2.trace(PROMPT, remote="local") as tracer:
        for i in range(3):
            print("line", i)
    with Client(server.host, api_key) as client:
        logs = [(f["n"], f["line"]) for f in client.submit_stream(tracer.remote_payload) if f["status"] == "LOG"]
    assert logs == [(0, "line 0"), (1, "line 1"), (2, "line 2")]


def test_the_error_frame_names_the_users_line(server, api_key, gpt2, remote_config):
    import traceback

    from nnsight.remote.client import Client

    with pytest.raises(AttributeError, match="no_such_attribute") as info:
        with gpt2.trace(PROMPT, remote=True) as tracer:
            h = gpt2.transformer.h[0].output[0]
            h.no_such_attribute  # noqa: B018
    assert tracer.backend.transport == "stream"
    tb = traceback.extract_tb(info.value.__traceback__)
    assert any(f.filename == __file__ and "no_such_attribute" in (f.line or "") for f in tb)
    with Client(server.host, api_key) as client:
        last = list(client.submit_stream(tracer.remote_payload))[-1]
    assert last["status"] == "ERROR" and "no_such_attribute" in last["error"]["message"]
    assert any(frame[0] == __file__ for frame in last["error"]["frames"])


def test_a_large_result_is_fetched_by_get_after_the_stream(server, api_key, gpt2, remote_config):
    import torch

    from nnsight.remote.client import Client

    with gpt2.trace(PROMPT, remote=True) as tracer:
        noise = torch.randn(64, 8, 768, generator=torch.Generator().manual_seed(0))
        big = (gpt2.lm_head.output.sum() + noise).save()  # 1.5 MB: over the inline limit
    assert tracer.backend.transport == "stream" and tuple(big.shape) == (64, 8, 768)
    with Client(server.host, api_key) as client:
        streamed = list(client.submit_stream(tracer.remote_payload))
        last = streamed[-1]
        assert last["status"] == "COMPLETED" and "result" not in last and "inline" not in last
        assert len(client.result(last["id"])) > (1 << 20)


def test_a_client_that_leaves_mid_stream_finds_its_result_by_id(server, api_key, gpt2, remote_config):
    from nnsight.remote.client import Client

    busy = _busy_payload(gpt2, 3_000_000)
    with Client(server.host, api_key) as client, \
            httpx.Client(base_url=server.url, headers={"ndif-api-key": api_key}, timeout=30) as http:
        def subscribers():
            return http.get("/v1/metrics").json()["event_subscribers"]

        before = subscribers()
        ahead = client.submit(busy)["id"]  # keeps the worker busy: the streamed job waits in the queue
        stream = client.submit_stream(busy)
        job_id = next(stream)["id"]
        stream.close()  # the client goes away right after the acknowledgement
        # the server notices at once: the stream's subscription ends while its job still waits
        for _ in range(500):
            if subscribers() <= before:
                break
            time.sleep(0.01)
        assert subscribers() <= before
        assert client.status(job_id)["status"] in ("QUEUED", "RUNNING")
        statuses = [f["status"] for f in client.events(job_id)]
        assert statuses[-1] == "COMPLETED", statuses
        assert client.status(job_id)["status"] == "COMPLETED" and client.result(job_id)
        assert client.status(ahead)["status"] == "COMPLETED"


def test_running_reaches_the_client_while_a_longer_job_runs(server, api_key, gpt2, remote_config):
    """DISPATCHED and RUNNING are sent lazily (with the next frame, or within 50 ms): a job that runs
    for a while still shows RUNNING long before its end."""
    from nnsight.remote.client import Client

    arrived = {}
    with Client(server.host, api_key) as client:
        for frame in client.submit_stream(_busy_payload(gpt2, 3_000_000)):
            arrived.setdefault(frame["status"], time.monotonic())
    assert list(arrived) == LIFECYCLE, list(arrived)
    assert arrived["COMPLETED"] - arrived["RUNNING"] > 0.1, arrived


def test_a_trace_with_local_blocks_still_takes_the_websocket(gpt2, remote_config):
    seen = []
    with gpt2.trace(PROMPT, remote=True) as tracer:
        hidden = gpt2.transformer.h[0].output[0]
        with tracer.local():
            seen.append(float(hidden.sum()))  # runs here, on the client
        out = gpt2.transformer.h[0].output[0].save()
    assert tracer.backend.transport == "websocket" and abs(seen[0] - float(out.sum())) < 1e-3


# -- hostile streams ---------------------------------------------------------------------------


class HostileServer:
    """A loopback HTTP server that answers every POST with ``body`` as a frame stream, every GET
    with 404, and closes the connection (no nnsight server behind it)."""

    def __init__(self, body: bytes, headers: bytes = b"") -> None:
        self.body = body
        self.headers = headers
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.host = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.requests = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                request = read_request(conn)
                if request is None:
                    continue
                lines = request[0]
                self.requests.append(lines[0])
                if lines[0].startswith("POST"):
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/vnd.nnsight.frames\r\n"
                                 b"connection: close\r\n" + self.headers + b"\r\n" + self.body)
                else:
                    error = json.dumps({"code": "unknown_request", "message": "no such request", "hint": ""})
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                                 b"connection: close\r\n\r\n%s" % (len(error), error.encode()))

    def close(self) -> None:
        self.sock.close()


def _j(frame) -> bytes:
    body = json.dumps(frame).encode() if not isinstance(frame, bytes) else frame
    return struct.pack(">cI", b"J", len(body)) + body


ACK = _j({"id": "abc123", "status": "QUEUED", "position": 0})
HOSTILE = {
    "oversized frame": ACK + struct.pack(">cI", b"J", 0xFFFFFFFF) + b"x" * 64,
    "not json": ACK + _j(b"\xff\xfe{not json"),
    "not an object": ACK + _j([1, 2, 3]),
    "binary without inline": ACK + struct.pack(">cI", b"B", 4) + b"abcd",
    "inline over the limit": ACK + _j({"id": "abc123", "status": "COMPLETED", "inline": True, "size": 1 << 30}),
    "inline size mismatch": ACK + _j({"id": "abc123", "status": "COMPLETED", "inline": True, "size": 4})
    + struct.pack(">cI", b"B", 8) + b"abcdefgh",
    "bad id": _j({"id": "../../etc/passwd", "status": "QUEUED"}),
    "unknown kind": struct.pack(">cI", b"Z", 1) + b"z",
}


# The acknowledgement in the headers (a client asks for it): the same rules as a first frame.
HOSTILE_HEADERS = {
    "bad id in the headers": b"nnsight-job-id: ../../etc/passwd\r\n",
    "empty id in the headers": b"nnsight-job-id: \r\n",
    "negative position": b"nnsight-job-id: abc123\r\nnnsight-job-position: -1\r\n",
    "huge position": b"nnsight-job-id: abc123\r\nnnsight-job-position: " + b"9" * 400 + b"\r\n",
    "position not a number": b"nnsight-job-id: abc123\r\nnnsight-job-position: 1e9\r\n",
}
HOSTILE.update({name: b"" for name in HOSTILE_HEADERS})


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_streams_are_refused_before_anything_is_decoded(case):
    from nnsight.remote.backend import RemoteBackend
    from nnsight.remote.client import Client
    from nnsight.remote.errors import RemoteError

    hostile = HostileServer(HOSTILE[case], HOSTILE_HEADERS.get(case, b""))
    decoded = []
    try:
        backend = RemoteBackend(Client(hostile.host, ""), decoded.append)
        with pytest.raises(RemoteError) as info:
            backend.submit(b"request bytes")
            backend.wait()
        assert info.value.code == "bad_stream", info.value
        assert decoded == []  # no result bytes reached the decoder
        assert all(r.startswith("POST") for r in hostile.requests)  # refused, not followed elsewhere
    finally:
        hostile.close()


@pytest.mark.parametrize("cut", ["before the ack", "mid-frame after the ack"])
def test_a_truncated_stream_is_refused_or_followed_by_id(cut):
    from nnsight.remote.backend import RemoteBackend
    from nnsight.remote.client import Client
    from nnsight.remote.errors import RemoteError

    running = _j({"id": "abc123", "status": "RUNNING"})
    body = ACK[:7] if cut == "before the ack" else ACK + running[:-3]
    hostile = HostileServer(body)
    decoded = []
    try:
        backend = RemoteBackend(Client(hostile.host, ""), decoded.append)
        with pytest.raises(RemoteError) as info:
            backend.submit(b"request bytes")
            backend.wait()
        assert decoded == []
        if cut == "before the ack":
            assert "before it acknowledged" in str(info.value) and backend.job_id is None
        else:  # the job was acknowledged: the client followed it by id (this server has no such job)
            assert backend.job_id == "abc123" and info.value.status == 404
            assert any(r.startswith("GET /v1/requests/abc123") for r in hostile.requests)
    finally:
        hostile.close()
