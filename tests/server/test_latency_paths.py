"""The round trip's fast paths: a small result inline in the COMPLETED frame, one kept-alive
connection pool per server, and the store's durability setting."""
import httpx
import pytest

from compiler.ir.request import decode_result

PROMPT = "Hello world"


def _payload(gpt2):
    with gpt2.trace(PROMPT, remote="local") as tracer:
        out = gpt2.lm_head.output.save()  # noqa: F841
    return tracer.remote_payload


def test_a_small_result_comes_inline_with_completed_and_equals_the_get(server, api_key, gpt2):
    from nnsight.remote.client import Client

    with Client(server.host, api_key) as client:
        job_id = client.submit(_payload(gpt2))["id"]
        frames = list(client.events(job_id, inline_result=True))
        last = frames[-1]
        assert last["status"] == "COMPLETED" and last["inline"] is True
        assert last["result"] == client.result(job_id) and len(last["result"]) == last["size"]
        decode_result(last["result"])  # well-formed result bytes
        # A finished job's stream gives it inline too; without asking, the frame comes alone.
        again = list(client.events(job_id, inline_result=True))
        assert [f["status"] for f in again][-1] == "COMPLETED" and again[-1]["result"] == last["result"]
        assert again[-1]["inline"] is True and again[-1]["size"] == len(last["result"])  # (replayed from the store)
        plain = list(client.events(job_id))
        assert "result" not in plain[-1] and "inline" not in plain[-1]
        assert plain[-1]["size"] == len(last["result"])


def test_clients_of_one_server_share_one_kept_alive_pool(server, api_key):
    from nnsight.remote.client import Client

    first, second = Client(server.host, api_key), Client(server.host, api_key)
    assert first.ping() and second.ping()
    assert first.http is second.http
    first.close()  # done with it: the pool stays for the next trace
    assert not second.http.is_closed and second.ping()
    assert httpx.get(server.url + "/ping").status_code == 200


def test_the_store_fsyncs_only_when_asked(tmp_path):
    from runtime.server.store import Store

    for fsync, mode in ((False, 1), (True, 2)):  # PRAGMA synchronous: 1 NORMAL, 2 FULL
        store = Store(str(tmp_path / ("db%d" % fsync)), str(tmp_path / ("blobs%d" % fsync)), fsync=fsync)
        try:
            assert store._db.execute("PRAGMA synchronous").fetchone()[0] == mode
            store.add_job("j", "gpt2", None, b"request bytes")
            assert store.read_blob("j", "request") == b"request bytes"
            store.finish("j", "COMPLETED", result=b"result bytes")
            assert store.read_blob("j", "result") == b"result bytes" and store.read_blob("j", "request") is None
        finally:
            store.close()


def test_the_server_admits_the_same_bytes_once(gpt2):
    """The app admits a request when it arrives and the worker when the job runs: the second is a
    lookup of the same (immutable) request; other bytes are admitted afresh."""
    from runtime import accept

    payload = _payload(gpt2)
    first = accept.admit(payload)
    assert accept.admit(payload) is first
    with gpt2.trace("Another prompt", remote="local") as tracer:
        out = gpt2.lm_head.output.save()  # noqa: F841
    assert accept.admit(tracer.remote_payload) is not first
    assert accept.admit(bytes(payload)) is first  # by content, not by object


def test_a_runner_keeps_its_snapshot_only_while_jobs_leave_the_model_intact(gpt2):
    """The snapshot a job was found intact against is the next job's; after any change (undone by
    the check) or on another thread a new one is taken, and the change is still caught."""
    import threading

    import torch

    from runtime import integrity
    from runtime.server.runner import IntactWatch, JobFailed

    with gpt2.trace(PROMPT):  # the weights loaded (not meta)
        pass
    watch = IntactWatch()
    first = watch.before(gpt2)
    watch.after(first, None)
    assert watch.before(gpt2) is first  # intact: kept
    watch.after(first, None)
    weight = gpt2._module.transformer.h[0].mlp.c_fc.weight
    pristine = weight.detach().clone()
    reused = watch.before(gpt2)
    assert reused is first
    with torch.no_grad():
        weight.add_(1.0)  # what a job that got past the loader would leave
    with pytest.raises(JobFailed) as failed:
        watch.after(reused, None)
    assert "transformer.h.0.mlp.c_fc.weight" in failed.value.info["message"] and torch.equal(weight, pristine)
    fresh = watch.before(gpt2)
    assert fresh is not first  # a change was undone: taken again
    watch.after(fresh, None)
    other = integrity.snapshot(gpt2)  # another runner undoes a change: every kept snapshot is dated
    with torch.no_grad():
        weight.add_(1.0)
    with pytest.raises(integrity.IntegrityError):
        integrity.enforce(other)
    assert watch.before(gpt2) is not fresh
    kept = watch.before(gpt2)
    watch.after(kept, None)
    found = []
    thread = threading.Thread(target=lambda: found.append(watch.before(gpt2)))
    thread.start()
    thread.join()
    assert found[0] is not kept  # torch's modes are per thread: not reused on another


def test_a_claim_says_whether_another_job_waits_behind_it(tmp_path):
    """The worker waits for a wake-up instead of asking the store again when nothing was queued behind
    the job it claimed; the claim says so in the same transaction."""
    from runtime.server.store import Store

    store = Store(str(tmp_path / "db"), str(tmp_path / "blobs"))
    try:
        for job_id, model in (("a", "gpt2"), ("b", "other"), ("c", "gpt2")):
            store.add_job(job_id, model, None, b"request bytes")
        first = store.claim_next("gpt2")
        assert (first["id"], first["more_queued"]) == ("a", True)
        second = store.claim_next("gpt2")
        assert (second["id"], second["more_queued"]) == ("c", False)  # ("b" is another model's)
        assert store.claim_next("gpt2") is None
        last = store.claim_next()
        assert (last["id"], last["more_queued"]) == ("b", False)
    finally:
        store.close()
