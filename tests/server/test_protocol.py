"""The HTTP protocol: endpoints, and a clean JSON refusal for every bad request."""
import json

import httpx
import pytest

from compiler.ir import framing
from compiler.ir.request import REQUEST_MAGIC, Request, decode_request, encode_request

from serverproc import MAX_REQUEST_BYTES

PROMPT = "Hello world"


@pytest.fixture(scope="module")
def payload(gpt2):
    """A valid request's bytes (compiled by the client, as remote=True sends them)."""
    with gpt2.trace(PROMPT, remote="local") as tracer:
        out = gpt2.lm_head.output.save()  # noqa: F841
    return tracer.remote_payload


def post(server, body, key):
    headers = {"ndif-api-key": key} if key is not None else {}
    return httpx.post(server.url + "/v1/requests", content=body, headers=headers, timeout=30)


def refusal(response, status, code):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["message"] and "hint" in body
    return body


def test_ping_env_models_and_config(server, gpt2_path):
    assert httpx.get(server.url + "/ping").json() == {"status": "ok"}
    env = httpx.get(server.url + "/v1/env").json()
    assert env["ir_versions"][0] == 1 and "torch" in env["packages"] and "torch" in env["server_modules"]["server_modules"]
    models = httpx.get(server.url + "/v1/models").json()["models"]
    assert [(m["name"], m["source"], m["state"]) for m in models] == [("gpt2", gpt2_path, "READY")]
    files = httpx.get(server.url + "/v1/models/gpt2/config").json()["files"]
    assert json.loads(files["config.json"])["model_type"] == "gpt2" and "tokenizer.json" in files
    assert not any(name.endswith((".safetensors", ".bin")) for name in files)
    refusal(httpx.get(server.url + "/v1/models/nope/config"), 404, "unknown_model")


def test_submit_then_status_result_and_events(server, api_key, payload):
    from nnsight.remote.client import Client

    reply = post(server, payload, api_key)
    assert reply.status_code == 202 and reply.json()["status"] == "QUEUED"
    job_id = reply.json()["id"]
    with Client(server.host, api_key) as client:
        frames = [f["status"] for f in client.events(job_id)]
        assert frames[-1] == "COMPLETED"
        status = client.status(job_id)
        assert status["status"] == "COMPLETED" and status["error"] is None
        assert client.result(job_id)[:4] != b""
        # A client that went away finds its result later by id; events of a finished job replay its
        # lifecycle and end at once.
        assert [f["status"] for f in client.events(job_id)] == ["RECEIVED", "QUEUED", "DISPATCHED", "RUNNING",
                                                                 "COMPLETED"]


def test_bad_key_is_401(server, payload):
    refusal(post(server, payload, "nns_not_a_key"), 401, "bad_api_key")
    refusal(post(server, payload, None), 401, "bad_api_key")
    refusal(httpx.get(server.url + "/v1/requests/abc"), 401, "bad_api_key")


def test_revoked_key_is_401(server, payload):
    from serverproc import create_key
    import subprocess
    import sys

    key = create_key(server.data_dir, "short-lived")
    assert post(server, payload, key).status_code == 202
    listing = subprocess.run([sys.executable, "-m", "runtime.server", "keys", "list", "--data-dir", server.data_dir],
                             capture_output=True, text=True, check=True).stdout
    key_id = [line.split()[0] for line in listing.splitlines() if line.endswith("short-lived")][0]
    subprocess.run([sys.executable, "-m", "runtime.server", "keys", "revoke", key_id, "--data-dir", server.data_dir],
                   check=True, capture_output=True)
    refusal(post(server, payload, key), 401, "bad_api_key")


def test_unknown_model_is_404_with_the_hosted_list(server, api_key, payload):
    request = decode_request(payload)
    other = Request(request.program, 'nnsight.modeling.language.LanguageModel:{"repo_id": "meta-llama/Nope"}',
                    request.method, request.args, request.kwargs)
    body = refusal(post(server, encode_request(other), api_key), 404, "unknown_model")
    assert body["models"] == ["gpt2"] and "gpt2" in body["hint"]


def test_unknown_model_raises_on_the_client(tmp_path, server, remote_config, gpt2_path):
    import shutil

    from nnsight import LanguageModel
    from nnsight.remote import RemoteError

    copy = shutil.copytree(gpt2_path, tmp_path / "other-model")
    model = LanguageModel(str(copy))
    with pytest.raises(RemoteError, match="does not host") as info:
        with model.trace(PROMPT, remote=True):
            model.lm_head.output.save()
    assert info.value.status == 404 and "gpt2" in str(info.value)


def test_malformed_truncated_and_version_skewed_are_400(server, api_key, payload):
    refusal(post(server, b"garbage", api_key), 400, "malformed_request")
    refusal(post(server, payload[: len(payload) // 2], api_key), 400, "malformed_request")
    refusal(post(server, b"", api_key), 400, "malformed_request")
    header, offset = framing.read_header(payload, REQUEST_MAGIC, "request")
    skewed = framing.wrap(REQUEST_MAGIC, dict(header, ir_version=99), payload[offset:])
    body = refusal(post(server, skewed, api_key), 400, "ir_version")
    assert body["accepted"][0] == 1


def test_oversized_is_413(server, api_key):
    refusal(post(server, b"x" * (MAX_REQUEST_BYTES + 1), api_key), 413, "too_large")


def test_unknown_request_is_404(server, api_key):
    headers = {"ndif-api-key": api_key}
    refusal(httpx.get(server.url + "/v1/requests/nope", headers=headers), 404, "unknown_request")
    refusal(httpx.get(server.url + "/v1/requests/nope/result", headers=headers), 404, "unknown_request")


def test_cancel_queued_and_running_jobs(server, api_key, payload, gpt2, remote_config):
    import time

    from nnsight.remote import RemoteError
    from nnsight.remote.client import Client

    with gpt2.trace(PROMPT, remote=True, blocking=False) as slow:  # keeps the worker busy
        n = 0
        while n < 50_000_000:
            n += 1
    queued = post(server, payload, api_key).json()["id"]
    with Client(server.host, api_key) as client:
        assert client.cancel(queued)["status"] == "CANCELLED"
        assert client.status(queued)["status"] == "CANCELLED"
        refusal(httpx.get(server.url + "/v1/requests/%s/result" % queued, headers=client.headers), 409,
                "not_completed")
        deadline = time.monotonic() + 10
        while client.status(slow.backend.job_id)["status"] != "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert slow.backend.cancel() == "RUNNING"  # stopped at its next step
        with pytest.raises(RemoteError, match="cancelled"):
            slow.backend.wait()
        assert client.status(slow.backend.job_id)["status"] == "CANCELLED"
    with gpt2.trace(PROMPT, remote=True):  # the next job still runs
        out = gpt2.lm_head.output.save()
    assert out.shape[-1] == 768


def test_status_is_model_running_and_compare(server, api_key, gpt2_path, capsys):
    import nnsight
    from nnsight import ndif

    models = nnsight.status(server.host, api_key)
    assert [m["name"] for m in models] == ["gpt2"] and "gpt2" in capsys.readouterr().out
    assert nnsight.is_model_running("gpt2", server.host) and nnsight.is_model_running(gpt2_path, server.host)
    assert not nnsight.is_model_running("llama", server.host)
    rows = {r["package"]: r for r in ndif.compare(server.host, api_key)}
    assert rows["torch"]["local"] == rows["torch"]["server"] and not rows["nnsight"]["critical"]
    assert "torch" in capsys.readouterr().out


def _busy_payload(gpt2, loops):
    """The bytes of a job that spins ``loops`` times on the server (compiled, never run here)."""
    with gpt2.trace(PROMPT, remote=True, blocking=False) as tracer:
        n = 0
        while n < loops:
            n += 1
    tracer.backend.cancel()
    return tracer.remote_payload


def test_quota_429_and_full_queue_503_then_jobs_run_again(server, payload, gpt2, remote_config):
    from serverproc import MAX_IN_FLIGHT, MAX_QUEUE
    from nnsight.remote.client import Client
    from serverproc import create_key

    first, second = create_key(server.data_dir, "quota-1"), create_key(server.data_dir, "quota-2")
    busy = _busy_payload(gpt2, 100_000_000)  # every job holds the worker until its time limit
    ids = {first: [], second: []}
    try:
        # Jobs end (at the time limit) while this runs: submit until refused, well past the limits.
        reply = None
        for _ in range(MAX_IN_FLIGHT + 10):
            reply = post(server, busy, first)
            if reply.status_code != 202:
                break
            ids[first].append(reply.json()["id"])
        body = refusal(reply, 429, "too_many_jobs")
        assert str(MAX_IN_FLIGHT) in body["message"] and reply.headers["retry-after"]
        for _ in range(MAX_QUEUE + 10):
            reply = post(server, busy, second)
            if reply.status_code != 202:
                break
            ids[second].append(reply.json()["id"])
        body = refusal(reply, 503, "queue_full")
        assert str(MAX_QUEUE) in body["message"] and reply.headers["retry-after"]
    finally:
        for key, jobs in ids.items():
            with Client(server.host, key) as client:
                for job_id in jobs:
                    client.cancel(job_id)
    with Client(server.host, first) as client:
        job_id = client.submit(payload)["id"]
        assert [f["status"] for f in client.events(job_id)][-1] == "COMPLETED"


def test_a_client_that_disconnects_mid_job_finds_its_result_later(server, api_key, gpt2, remote_config):
    from nnsight.remote.client import Client

    with Client(server.host, api_key) as client:
        job_id = client.submit(_busy_payload(gpt2, 2_000_000))["id"]
        for frame in client.events(job_id):
            break  # the client goes away after its first frame
    with Client(server.host, api_key) as client:
        frames = [f["status"] for f in client.events(job_id)]
        assert frames[-1] == "COMPLETED" and client.result(job_id)
