"""A client newer than its server: the program goes out in the server's IR version when it can.

The older server is played by a proxy on loopback in front of the test server: it refuses a request
in IR version 3 exactly as a version-2 server does (``400 ir_version``, ``accepted: [1, 2]``) and
passes a version-2 request on to the real server, which reads it through its upgraders.
"""
import http.server
import json
import threading

import pytest
import torch

from compiler.ir import framing
from compiler.ir.errors import IRVersionError
from compiler.ir.request import REQUEST_MAGIC, decode_request, encode_request

PROMPT = "Hello world"


class _OldServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream, claimed=(1, 2)):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream
        self.claimed = list(claimed) if isinstance(claimed, tuple) else claimed  # its refusal's "accepted"
        self.versions = []  # the IR version of each request that reached it

    @property
    def host(self):
        return "127.0.0.1:%d" % self.server_address[1]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802 - http.server's name
        import httpx

        body = self.rfile.read(int(self.headers["content-length"]))
        version = framing.read_header(body, REQUEST_MAGIC, "request")[0]["ir_version"]
        self.server.versions.append(version)
        if version > 2:  # (what a version-2 server refuses, whatever its refusal claims)
            self._send(400, "application/json", json.dumps({
                "code": "ir_version", "message": "this runtime understands up to ir_version 2", "hint": "",
                "accepted": self.server.claimed}).encode())
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("ndif-api-key", "content-type")}
        reply = httpx.post(self.server.upstream + self.path, content=body, headers=headers, timeout=60)
        self._send(reply.status_code, reply.headers["content-type"], reply.content)

    def _send(self, status, content_type, data):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def old_server(server):
    proxy = _OldServer(server.url)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    yield proxy
    proxy.shutdown()
    proxy.server_close()


def _request(gpt2):
    with gpt2.trace(PROMPT, remote="local") as tracer:
        out = gpt2.lm_head.output.save()  # noqa: F841
    return tracer.remote_request


def test_a_program_written_in_version_2_reads_back_the_same(gpt2):
    request = _request(gpt2)
    older = encode_request(request, 2)
    assert framing.read_header(older, REQUEST_MAGIC, "request")[0]["ir_version"] == 2
    back = decode_request(older)  # (through the v2 -> v3 upgrader)
    assert back.program.units == request.program.units and back.program.bindings == request.program.bindings
    assert back.program.unknown_facts == ("backward",)  # what a version-2 program could not say


def test_a_gradient_session_cannot_be_written_for_an_older_server(gpt2_path):
    from nnsight import LanguageModel

    model = LanguageModel(gpt2_path, dispatch=True)
    model.requires_grad_(False)  # as a server hosts it
    with model.trace(PROMPT, remote="local") as tracer:
        hs = model.transformer.h[0].output
        hs.requires_grad = True
        with model.lm_head.output.sum().backward():
            grad = hs.grad.save()  # noqa: F841
    with pytest.raises(IRVersionError, match=r"gradient session .*test_older_server.py:\d+"):
        encode_request(tracer.remote_request, 2)
    for version in (1, 4, "2"):
        with pytest.raises(IRVersionError):
            encode_request(tracer.remote_request, version)

    from nnsight.remote import versions
    from nnsight.remote.errors import RemoteError

    def encode(version):
        return encode_request(tracer.remote_request, version)

    url = "http://127.0.0.1:9"
    versions.remember(url, 2)  # a server known to be old: the newest version goes out (it may be upgraded)
    assert framing.read_header(versions.encode_for(url, encode), REQUEST_MAGIC, "r")[0]["ir_version"] == 3
    assert versions.known(url) is None
    with pytest.raises(RemoteError, match="older than this client"):  # (its refusal's version: refused here)
        versions.encode_for(url, encode, 2)


def test_a_newer_client_falls_back_to_the_servers_version_once(gpt2, old_server, api_key):
    from nnsight import CONFIG
    from nnsight.remote import versions

    local = None
    with gpt2.trace(PROMPT):
        local = gpt2.lm_head.output.save()
    old = (CONFIG.API.HOST, CONFIG.API.APIKEY)
    CONFIG.API.HOST, CONFIG.API.APIKEY = old_server.host, api_key
    try:
        for _ in range(2):
            with gpt2.trace(PROMPT, remote=True) as tracer:
                out = gpt2.lm_head.output.save()
            assert torch.equal(out, local)
            assert framing.read_header(tracer.remote_payload, REQUEST_MAGIC, "request")[0]["ir_version"] == 2
    finally:
        CONFIG.API.HOST, CONFIG.API.APIKEY = old
        versions.forget("http://" + old_server.host)
    assert old_server.versions == [3, 2, 2]  # refused once; the second trace goes out in version 2 at once


@pytest.mark.parametrize("claimed", [[1, 99], [1, 1], ["1", "2"], [2], None, [3, 2], [1, True], {"a": 2}])
def test_a_refusal_naming_no_version_this_client_writes_is_not_retried(gpt2, server, api_key, claimed):
    from nnsight import CONFIG
    from nnsight.remote.errors import RemoteError

    proxy = _OldServer(server.url, claimed=claimed)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    old = (CONFIG.API.HOST, CONFIG.API.APIKEY)
    CONFIG.API.HOST, CONFIG.API.APIKEY = proxy.host, api_key
    try:
        with pytest.raises(RemoteError) as info:
            with gpt2.trace(PROMPT, remote=True):
                out = gpt2.lm_head.output.save()  # noqa: F841
        assert info.value.code == "ir_version" and "ir_version 2" in str(info.value)
    finally:
        CONFIG.API.HOST, CONFIG.API.APIKEY = old
        proxy.shutdown()
        proxy.server_close()
    assert proxy.versions == [3]  # sent once, never again in another version
