"""``nnsight-server serve --ray`` on a real two-node Ray cluster: the remote suite gives local values.

The front runs as a subprocess with two replica actors of the tiny GPT-2 (one per node); the
client is the ordinary ``remote=True`` client, unchanged. A second front (the end of this
module) hosts two models under a memory budget. The last test checks that the cluster and the
fronts hold sockets on loopback only.
"""
import os
import time

import httpx
import pytest
import torch
from raycluster import ray_env
from serverproc import ServerProcess
from sockets import off_loopback, process_tree, sockets_of

PROMPT = "The Eiffel Tower is in the city of"


def _models(server, key):
    return httpx.get(server.url + "/v1/models", headers={"ndif-api-key": key}, timeout=10).json()["models"]


def _logits(model, remote):
    with model.trace(PROMPT, remote=remote):
        logits = model.lm_head.output.save()
    return logits


def _job(server, key, job_id):
    return httpx.get(server.url + "/v1/requests/" + job_id, headers={"ndif-api-key": key}, timeout=10).json()


# The embedded server's remote suite, run here against the Ray front (``remote_config`` is the Ray
# server's in tests/ray/conftest.py): the same tests, the same values.
from test_remote_trace import (test_error_shows_the_users_line, test_save_matches_local,  # noqa: E402,F401
                               test_write_and_two_invokes_match_local)


def test_generate_with_iter_matches_local(gpt2, ray_remote):
    def run(remote):
        with gpt2.generate(PROMPT, max_new_tokens=3, remote=remote) as tracer:
            steps = list().save()
            for step in tracer.iter[:]:
                steps.append(gpt2.lm_head.output[0][-1].argmax(dim=-1))
            out = tracer.result.save()
        return steps, out

    (steps, out), (steps_local, out_local) = run(True), run(None)
    assert len(steps) == 3 and [int(s) for s in steps] == [int(s) for s in steps_local]
    assert torch.equal(out, out_local)


from test_remote_trace import test_session_is_one_request_with_shared_values  # noqa: E402,F401


def test_user_library_travels_by_value(gpt2, ray_remote, tmp_path, monkeypatch):
    cloudpickle = pytest.importorskip("cloudpickle")
    (tmp_path / "ray_user_helpers.py").write_text("def double(x):\n    return x * 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import ray_user_helpers

    cloudpickle.register_pickle_by_value(ray_user_helpers)
    try:
        with gpt2.trace("Hello", remote=True):
            doubled = ray_user_helpers.double(gpt2.lm_head.output).save()
        with gpt2.trace("Hello"):
            expected = (gpt2.lm_head.output * 2).save()
    finally:
        cloudpickle.unregister_pickle_by_value(ray_user_helpers)
    assert torch.equal(doubled, expected)


def test_print_and_local_block_cross_the_replica(gpt2, ray_remote, capsys):
    """A job's print() lines stream back from the actor; a tracer.local() block runs here, mid-job."""
    with gpt2.trace(PROMPT, remote=True) as tracer:
        print("hidden shape", tuple(gpt2.transformer.h[0].output.shape))
        hidden = gpt2.transformer.h[1].output[0]
        with tracer.local():
            steered = hidden * 1.5 + 1.0
        gpt2.transformer.h[1].output[0][:] = steered
        logits = gpt2.lm_head.output.save()
    with gpt2.trace(PROMPT):
        gpt2.transformer.h[1].output[0][:] = gpt2.transformer.h[1].output[0] * 1.5 + 1.0
        expected = gpt2.lm_head.output.save()
    assert torch.allclose(logits, expected, atol=1e-5)
    captured = capsys.readouterr()
    assert "hidden shape (1, 8, 64)" in captured.out
    assert "RUNNING" in captured.err and "COMPLETED" in captured.err


def test_a_job_that_raises_leaves_its_replica_serving(gpt2, ray_remote):
    with pytest.raises(ZeroDivisionError, match="raised by remote job"):
        with gpt2.trace(PROMPT, remote=True):
            gpt2.lm_head.output.save()
            1 / 0
    for _ in range(3):  # whichever replica took it, both serve the next ones
        with gpt2.trace(PROMPT, remote=True):
            out = gpt2.lm_head.output.save()
        assert out.shape[-1] == 768


def test_models_show_replica_states(gpt2, ray_remote, ray_server, ray_api_key):
    import nnsight

    (entry,) = _models(ray_server, ray_api_key)
    assert entry["name"] == "gpt2" and entry["state"] == "READY"  # earlier tests loaded it
    assert [r["index"] for r in entry["replicas"]] == [0, 1]
    assert all(r["state"] in ("COLD", "LOADING", "READY") for r in entry["replicas"])
    rows = nnsight.status(host=ray_server.host, api_key=ray_api_key, show=False)
    assert rows[0]["state"] == "READY" and len(rows[0]["replicas"]) == 2


LOOPS = 30_000_000  # several seconds of Python on a replica: long enough to kill it mid-job

# Run by a separate Ray driver: waits for the job to run on a replica, kills that replica's actor
# (Ray restarts it), prints the replica's index.
KILLER = """
import json, time, urllib.request
deadline = time.monotonic() + 300
while time.monotonic() < deadline:
    job_id = open(%(job_file)r).read().strip()
    if job_id:
        ask = urllib.request.Request(%(url)r + "/v1/requests/" + job_id, headers={"ndif-api-key": %(key)r})
        replica = json.load(urllib.request.urlopen(ask))["replica"]
        if replica is not None:
            ray.kill(ray.get_actor(replica["actor"], namespace="nnsight-server"), no_restart=False)
            print(replica["index"], flush=True)
            break
    time.sleep(0.02)
"""


def test_killing_a_replica_mid_job_runs_the_job_again_on_the_other(gpt2, ray_remote, ray_server, ray_api_key,
                                                                    ray_cluster, tmp_path):
    job_file = tmp_path / "job_id"
    job_file.write_text("")
    killer = ray_cluster.driver(KILLER % {"job_file": str(job_file), "url": ray_server.url, "key": ray_api_key})
    try:
        assert killer.stdout.readline().strip() == "connected", killer.stderr.read()
        with gpt2.trace(PROMPT, remote=True, blocking=False) as tracer:
            n = 0
            while n < LOOPS:
                n += 1
            count = n.save()  # noqa: F841
            logits = gpt2.lm_head.output.save()  # noqa: F841
        job_id = tracer.backend.job_id
        job_file.write_text(job_id)
        out, err = killer.communicate(timeout=300)
    finally:
        if killer.poll() is None:
            killer.kill()
            killer.wait(10)
    assert killer.returncode == 0 and out.strip().isdigit(), err[-2000:]
    victim = int(out.strip())
    deadline = time.monotonic() + 300
    while _job(ray_server, ray_api_key, job_id)["status"] not in ("COMPLETED", "ERROR", "CANCELLED"):
        assert time.monotonic() < deadline, "the job did not finish after its replica was killed"
        time.sleep(0.2)
    status = _job(ray_server, ray_api_key, job_id)
    assert status["status"] == "COMPLETED" and status["attempts"] == 2, status
    logs = status["logs"]
    assert sum("stopped while running this job" in line for line in logs) == 1, logs  # it ran exactly twice
    assert any("attempt 2 of this job runs on replica gpt2#%d" % (1 - victim) in line for line in logs), logs
    result = tracer.backend()
    with gpt2.trace(PROMPT):
        expected = gpt2.lm_head.output.save()
    assert int(result["count"]) == LOOPS
    assert torch.equal(torch.as_tensor(result["logits"]), expected)
    # Ray restarts the killed replica; both serve the next jobs
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if _models(ray_server, ray_api_key)[0]["replicas"][victim]["state"] in ("COLD", "READY"):
            break
        time.sleep(0.5)
    for _ in range(4):
        with gpt2.trace(PROMPT, remote=True):
            out = gpt2.lm_head.output.save()
        assert out.shape[-1] == 768


def test_cancel_stops_the_job_on_its_replica(gpt2, ray_remote, ray_server, ray_api_key):
    with gpt2.trace(PROMPT, remote=True, blocking=False) as tracer:
        n = 0
        while n < LOOPS * 10:
            n += 1
        count = n.save()  # noqa: F841
    job_id = tracer.backend.job_id
    deadline = time.monotonic() + 120
    while _job(ray_server, ray_api_key, job_id)["replica"] is None:
        assert time.monotonic() < deadline, "the job never started on a replica"
        time.sleep(0.1)
    httpx.delete(ray_server.url + "/v1/requests/" + job_id, headers={"ndif-api-key": ray_api_key}, timeout=10)
    deadline = time.monotonic() + 60
    while _job(ray_server, ray_api_key, job_id)["status"] != "CANCELLED":
        assert time.monotonic() < deadline, _job(ray_server, ray_api_key, job_id)
        time.sleep(0.2)
    assert not any("stopped while running" in line for line in _job(ray_server, ray_api_key, job_id)["logs"])
    with gpt2.trace(PROMPT, remote=True):
        out = gpt2.lm_head.output.save()
    assert out.shape[-1] == 768


# -- two models under a memory budget that fits one, a short time limit -------------------------
#
# One replica each, declared with no CPU (``--resources NAME:num_cpus=0``) so they are placed next
# to the two-replica server above. The tiny GPT-2 (~1.06 MB) and tiny Llama (~0.69 MB) do not fit
# a 1.5 MB budget together: loading one evicts the other's idle replica.


@pytest.fixture(scope="module")
def budget_ray_server(ray_cluster, tmp_path_factory, gpt2_path, llama_path):
    proc = ServerProcess(str(tmp_path_factory.mktemp("ray-budget")), ["gpt2=%s" % gpt2_path, "llama=%s" % llama_path],
                         "--no-auth", "--ray", "--address", ray_cluster.address, "--replicas", "1",
                         "--resources", "gpt2:num_cpus=0", "--resources", "llama:num_cpus=0",
                         "--memory-budget", "1.5MB", "--job-time-limit", "5")
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in ray_env().items() if k.startswith("RAY_")})
    try:
        proc.start(timeout=300.0)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    yield proc
    proc.stop()


@pytest.fixture
def budget_remote(budget_ray_server):
    from nnsight import CONFIG

    old = CONFIG.API.HOST, CONFIG.API.APIKEY
    CONFIG.API.HOST, CONFIG.API.APIKEY = budget_ray_server.host, ""
    yield CONFIG
    CONFIG.API.HOST, CONFIG.API.APIKEY = old


def _budget_states(server):
    models = httpx.get(server.url + "/v1/models", timeout=10).json()["models"]
    return {m["name"]: (m["state"], [r["state"] for r in m["replicas"]]) for m in models}


def test_replicas_load_lazily_and_evict_under_the_budget(budget_ray_server, budget_remote, gpt2_path, llama_path):
    from nnsight import LanguageModel

    gpt2, llama = LanguageModel(gpt2_path), LanguageModel(llama_path)
    assert _budget_states(budget_ray_server) == {"gpt2": ("COLD", ["COLD"]), "llama": ("COLD", ["COLD"])}
    assert torch.equal(_logits(gpt2, True), _logits(gpt2, None))
    assert _budget_states(budget_ray_server)["gpt2"] == ("READY", ["READY"])
    assert torch.equal(_logits(llama, True), _logits(llama, None))
    assert _budget_states(budget_ray_server) == {"gpt2": ("EVICTED", ["EVICTED"]), "llama": ("READY", ["READY"])}
    assert torch.equal(_logits(gpt2, True), _logits(gpt2, None))
    assert _budget_states(budget_ray_server) == {"gpt2": ("READY", ["READY"]), "llama": ("EVICTED", ["EVICTED"])}


def test_a_job_over_its_time_limit_fails_and_the_replica_serves_the_next(budget_ray_server, budget_remote,
                                                                         gpt2_path):
    from nnsight import LanguageModel
    from nnsight.remote import RemoteJobError

    gpt2 = LanguageModel(gpt2_path)
    with pytest.raises(RemoteJobError, match="limit"):
        with gpt2.trace(PROMPT, remote=True):
            n = 0
            while n >= 0:
                n += 1
    # stopped inside the replica (its model still loaded), not by the front killing the actor
    assert _budget_states(budget_ray_server)["gpt2"] == ("READY", ["READY"])
    assert torch.equal(_logits(gpt2, True), _logits(gpt2, None))


# -- loopback only -------------------------------------------------------------------------------
#
# Last in the module, while both fronts run and their replicas' workers exist: every socket of
# every process of the cluster (GCS, both raylets, agents, workers) and of each front listens on,
# and talks to, loopback only.


def test_the_cluster_and_the_fronts_use_loopback_only(ray_cluster, ray_server, budget_ray_server):
    cluster = ray_cluster.processes()
    listening = {sock.local[1] for pid in cluster for sock in sockets_of(pid) if sock.listening}
    raylets = [pid for pid, cmd in cluster.items() if "/raylet/raylet " in cmd]
    assert ray_cluster.port in listening and len(raylets) == 2, "the cluster's processes were not all found:\n%s" % (
        "\n".join("%d %s" % (pid, cmd[:120]) for pid, cmd in sorted(cluster.items())))
    offenders = off_loopback(cluster)
    assert not offenders, "Ray sockets off loopback:\n" + "\n".join(offenders)

    for front in (ray_server, budget_ray_server):
        processes = process_tree([front.proc.pid])
        to_gcs = [sock for pid in processes for sock in sockets_of(pid)
                  if not sock.listening and sock.remote[1] == ray_cluster.port]
        assert to_gcs, "the front (pid %d) holds no connection to the GCS at %s" % (front.proc.pid, ray_cluster.address)
        offenders = off_loopback(processes)
        assert not offenders, "the front's sockets off loopback:\n" + "\n".join(offenders)
