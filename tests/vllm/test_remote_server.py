"""A real ``nnsight-server --engine vllm`` (a subprocess on loopback) hosting the tiny Llama.

Remote jobs from several clients run in the one engine at the same time; each client gets its
own saves, equal to the same trace on a local ``VLLM`` engine (greedy sampling); a job that
raises or is cancelled ends alone while the others complete.
"""
import os
import sys
import time

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "server"))
from serverproc import ServerProcess, create_key  # noqa: E402 - tests/server's helper, imported by path

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

CLIENTS = 8
PROMPTS = ["Paris is the", "The cat sat", "A river runs", "The model said", "Hello world and",
           "One two three", "The red car", "A small bird"]
TOKENS = 6
TIME_LIMIT_S = 20  # the server's per-job wall-clock limit (the trace body of one test job loops past it)


@pytest.fixture(scope="module")
def server(tmp_path_factory, llama_path):
    data = str(tmp_path_factory.mktemp("vllm-server"))
    key = create_key(data, "tests", "--tier", "trusted")  # vLLM jobs run in the engine: trusted only
    proc = ServerProcess(data, ["llama=%s" % llama_path], "--engine", "vllm", "--job-time-limit", str(TIME_LIMIT_S),
                         "--engine-arg", "max_model_len=256", "--max-engine-jobs", str(CLIENTS))
    proc.start(timeout=300)
    proc.key = key
    yield proc
    stop_gently(proc)


def stop_gently(proc):
    """SIGTERM, then wait: the server stops its engine's child process (vLLM takes a few seconds)."""
    if proc.proc is not None and proc.proc.poll() is None:
        proc.proc.terminate()
        proc.proc.wait(60)
    proc.stop()


@pytest.fixture
def remote(server):
    from nnsight import CONFIG

    old = (CONFIG.API.HOST, CONFIG.API.APIKEY)
    CONFIG.API.HOST, CONFIG.API.APIKEY = server.host, server.key
    yield server
    CONFIG.API.HOST, CONFIG.API.APIKEY = old


@pytest.fixture(scope="module")
def local(llama_path):
    """The reference: the same traces on a local (in-process) engine."""
    from nnsight.modeling.vllm import VLLM

    model = VLLM(llama_path, dispatch=True, max_model_len=256)
    yield model
    model.shutdown()


@pytest.fixture(scope="module")
def client_model(llama_path):
    """The client's model: no engine, no weights (remote=True sends every trace)."""
    from nnsight.modeling.vllm import VLLM

    return VLLM(llama_path)


def client_trace(model, i, fail=False, **remote):
    """Client ``i``: its own prompt; at step 1 its own token is forced; every step's logits saved."""
    with model.trace(PROMPTS[i], temperature=0.0, max_tokens=TOKENS, ignore_eos=True, **remote) as tracer:
        logits = list().save()
        for step in tracer.iter[:]:
            if step == 0:
                hidden = model.model.layers[0].mlp.output.save()
            if step == 1:
                model.logits.output[:, 100 + i] = 1e4
            if fail and step == 2:
                raise ValueError("client %d fails on purpose" % i)
            logits.append(model.logits.output)
        out = tracer.result.save()
        print("client", i, "done")
    if remote.get("blocking", True) is False:
        return tracer
    return {"logits": logits, "hidden": hidden, "out": out}


def check_equal(got, want, i):
    tokens = list(got["out"].outputs[0].token_ids)
    assert tokens == list(want["out"].outputs[0].token_ids), "client %d got another client's tokens?" % i
    assert tokens[1] == 100 + i  # its own intervention
    assert len(got["logits"]) == TOKENS
    for g, w in zip(got["logits"], want["logits"]):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got["hidden"], want["hidden"], rtol=1e-4, atol=1e-4)


def wait_all(tracers, timeout=240.0):
    deadline = time.monotonic() + timeout
    results = [None] * len(tracers)
    errors = [None] * len(tracers)
    while any(r is None and e is None for r, e in zip(results, errors)):
        assert time.monotonic() < deadline, "jobs did not finish in %gs" % timeout
        for i, tracer in enumerate(tracers):
            if results[i] is None and errors[i] is None:
                try:
                    results[i] = tracer.backend()
                except Exception as error:  # noqa: BLE001 - checked by the caller
                    errors[i] = error
        time.sleep(0.1)
    return results, errors


def test_models_lists_the_vllm_engine(remote):
    import httpx

    listed = httpx.get(remote.url + "/v1/models", timeout=10).json()["models"]
    assert [(m["name"], m["engine"], m["state"]) for m in listed] == [("llama", "vllm", "READY")]
    assert listed[0]["key"].startswith("nnsight.modeling.vllm.model.VLLM:")


def test_one_remote_trace_equals_local(remote, client_model, local, capsys):
    got = client_trace(client_model, 0, remote=True)
    want = client_trace(local, 0)
    check_equal(got, want, 0)
    assert "client 0 done" in capsys.readouterr().out  # the intervention's print, as a LOG line


def test_concurrent_clients_each_get_their_own_saves(remote, client_model, local):
    tracers = [client_trace(client_model, i, remote=True, blocking=False) for i in range(CLIENTS)]
    results, errors = wait_all(tracers)
    assert errors == [None] * CLIENTS
    for i, result in enumerate(results):
        check_equal(result, client_trace(local, i), i)
    # the jobs were in the engine at the same time (continuous batching), not one after another
    from nnsight.remote.client import Client

    with Client(remote.host, remote.key) as client:
        spans = [(s["started"], s["finished"]) for s in (client.status(r["id"]) for r in results)]
    overlapping = max(sum(1 for a, b in spans if a <= start < b) for start, _ in spans)
    assert overlapping > 1, spans


def test_a_failing_job_ends_alone(remote, client_model, local):
    tracers = [client_trace(client_model, i, fail=(i == 2), remote=True, blocking=False) for i in range(4)]
    results, errors = wait_all(tracers)
    assert isinstance(errors[2], ValueError) and "client 2 fails on purpose" in str(errors[2])
    for i in (0, 1, 3):
        assert errors[i] is None
        check_equal(results[i], client_trace(local, i), i)


def test_cancel_a_running_job(remote, client_model, local):
    from nnsight.remote.client import Client

    with client_model.trace("Hello", temperature=0.0, max_tokens=200, ignore_eos=True, remote=True,
                            blocking=False) as tracer:
        seen = list().save()
        for step in tracer.iter[:]:
            busy = 0
            for k in range(20000):  # slow steps: the job is still running when it is cancelled
                busy += k
            seen.append(step)
    job_id = tracer.backend.job_id
    with Client(remote.host, remote.key) as client:
        deadline = time.monotonic() + 120
        while client.status(job_id)["status"] != "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert tracer.backend.cancel() in ("RUNNING", "CANCELLED")
        while client.status(job_id)["status"] == "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.status(job_id)["status"] == "CANCELLED"
    check_equal(client_trace(client_model, 5, remote=True), client_trace(local, 5), 5)  # the engine goes on


def test_remote_model_generate(remote, local):
    """The torch-free client's RemoteModel, against the vLLM-hosted model (HF's max_new_tokens= accepted)."""
    from nnsight import RemoteModel

    model = RemoteModel("llama", host=remote.host, api_key=remote.key)
    with model.generate(PROMPTS[3], temperature=0.0, max_new_tokens=TOKENS, ignore_eos=True) as tracer:
        logits = list().save()
        for step in tracer.iter[:]:
            logits.append(model.logits.output)
        tokens = list(tracer.result.outputs[0].token_ids).save()
    with local.trace(PROMPTS[3], temperature=0.0, max_tokens=TOKENS, ignore_eos=True) as ref:
        pass
    assert tokens == list(ref.result[0].outputs[0].token_ids)
    assert [int(torch.as_tensor(l).argmax(-1)) for l in logits] == tokens


def test_local_blocks_are_refused(remote, client_model):
    with pytest.raises(Exception, match="not supported on a vLLM-hosted model"):
        with client_model.trace("Hello", temperature=0.0, max_tokens=2, remote=True) as tracer:
            logits = client_model.logits.output
            with tracer.local():
                total = float(logits.sum())  # noqa: F841


def test_untrusted_keys_are_refused_and_the_engine_keeps_serving(server, remote, client_model, local):
    """No per-job sandbox around a shared engine: an untrusted key's job is refused, not run unisolated."""
    from nnsight import CONFIG

    untrusted = create_key(server.data_dir, "stranger", "--tier", "untrusted")
    CONFIG.API.APIKEY = untrusted
    try:
        with pytest.raises(Exception, match="untrusted keys are refused"):
            client_trace(client_model, 0, remote=True)
    finally:
        CONFIG.API.APIKEY = server.key
    check_equal(client_trace(client_model, 0, remote=True), client_trace(local, 0), 0)


def test_a_looping_trace_body_is_stopped(remote, client_model, local):
    """The body's own statements run on the server to collect the invokes: a loop there is stopped at
    the limit, and the next job runs."""
    from nnsight.remote.errors import RemoteJobError

    with pytest.raises(RemoteJobError, match="ran longer than"):
        with client_model.trace(temperature=0.0, max_tokens=2, remote=True) as tracer:
            n = 0
            while n >= 0:
                n += 1
            with tracer.invoke("Hello"):
                logits = client_model.logits.output.save()  # noqa: F841
    check_equal(client_trace(client_model, 4, remote=True), client_trace(local, 4), 4)
