"""kill -9 and restart: queued jobs run, finished results stay, a job running at the crash is re-queued
once and then failed with a clear reason."""
import time

from serverproc import ServerProcess, create_key

PROMPT = "Hello world"


def _slow_payload(gpt2, loops):
    with gpt2.trace(PROMPT, remote="local") as tracer:
        n = 0
        while n < loops:
            n += 1
        out = gpt2.lm_head.output.save()  # noqa: F841
    return tracer.remote_payload


def _fast_payload(gpt2):
    with gpt2.trace(PROMPT, remote="local") as tracer:
        out = gpt2.lm_head.output.save()  # noqa: F841
    return tracer.remote_payload


def _wait(client, job_id, statuses, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.status(job_id)
        if status["status"] in statuses:
            return status
        time.sleep(0.02)
    raise AssertionError("job %s never reached %s: %s" % (job_id, statuses, client.status(job_id)))


def test_kill_9_loses_nothing(tmp_path, gpt2, gpt2_path):
    from nnsight.remote.client import Client

    data = str(tmp_path / "data")
    key = create_key(data)
    slow, fast = _slow_payload(gpt2, 3_000_000), _fast_payload(gpt2)
    server = ServerProcess(data, ["gpt2=%s" % gpt2_path], "--job-time-limit", "600").start()
    try:
        with Client(server.host, key) as client:
            done = client.submit(fast)["id"]
            _wait(client, done, ("COMPLETED",))
            first_result = client.result(done)
            running = client.submit(slow)["id"]
            queued = [client.submit(fast)["id"] for _ in range(3)]
            _wait(client, running, ("RUNNING", "COMPLETED"))
        server.kill9()

        server.start()  # same data dir: the crashed job runs again (attempt 2), then the queued ones
        with Client(server.host, key) as client:
            assert client.result(done) == first_result  # finished results survive
            for job_id in [running] + queued:
                assert _wait(client, job_id, ("COMPLETED", "ERROR"))["status"] == "COMPLETED"
            assert client.result(queued[-1]) == first_result
    finally:
        server.stop()


def test_a_job_running_at_each_of_two_crashes_is_failed_with_the_reason(tmp_path):
    """The store's restart rule (the server calls recover() when it starts), on a real SQLite file."""
    from runtime.server.store import ERROR, QUEUED, Store

    def restart():
        store = Store(str(tmp_path / "jobs.sqlite3"), str(tmp_path / "blobs"))
        store.recover(max_attempts=2)
        return store

    store = restart()
    store.add_job("j1", "gpt2", None, b"request bytes")
    assert store.claim_next()["id"] == "j1"  # running when the server dies
    store.close()
    store = restart()
    assert store.get("j1")["status"] == QUEUED and store.read_blob("j1", "request") == b"request bytes"
    assert store.claim_next()["attempts"] == 2  # dies again
    store.close()
    store = restart()
    job = store.get("j1")
    assert job["status"] == ERROR and "2 time(s)" in job["error"]["message"]
    assert store.claim_next() is None


def test_finished_jobs_expire_with_their_results(tmp_path):
    from runtime.server.store import COMPLETED, Store

    store = Store(str(tmp_path / "jobs.sqlite3"), str(tmp_path / "blobs"))
    store.add_job("old", "gpt2", None, b"request")
    store.claim_next()
    store.add_log("old", "a printed line", 10)
    store.finish("old", COMPLETED, result=b"result bytes")
    store.add_job("queued", "gpt2", None, b"request")
    assert store.read_blob("old", "result") == b"result bytes" and store.read_blob("old", "request") is None
    assert store.expire(ttl_s=3600) == 0  # not old enough
    assert store.expire(ttl_s=-1) == 1
    assert store.get("old") is None and store.read_blob("old", "result") is None and store.logs("old") == []
    assert store.get("queued")["status"] == "QUEUED"  # unfinished jobs never expire


def test_a_new_job_knows_its_queue_position(tmp_path):
    from runtime.server.store import Store

    store = Store(str(tmp_path / "jobs.sqlite3"), str(tmp_path / "blobs"))
    assert [store.add_job("j%d" % n, "gpt2", None, b"request") for n in range(3)] == [0, 1, 2]
    assert store.claim_next()["id"] == "j0"  # running: no longer ahead of anyone
    assert store.add_job("j3", "gpt2", None, b"request") == 2 == store.position("j3")


def test_the_positions_of_many_jobs_come_from_one_statement_per_chunk(tmp_path):
    """Store.positions (what the dispatcher announces after each claim) agrees with position for
    queued, running, finished and unknown jobs, across more ids than one statement takes."""
    from runtime.server import store as store_module
    from runtime.server.store import COMPLETED, Store

    store = Store(str(tmp_path / "jobs.sqlite3"), str(tmp_path / "blobs"))
    ids = ["j%04d" % n for n in range(store_module._IDS_PER_STATEMENT + 40)]
    for job_id in ids:
        store.add_job(job_id, "gpt2", None, b"request")
    running = store.claim_next()["id"]
    finished = store.claim_next()["id"]
    store.finish(finished, COMPLETED, result=b"r")
    asked = ids[::-1] + ["no-such-job"]
    found = store.positions(asked)
    assert running not in found and finished not in found and "no-such-job" not in found
    assert found == {job_id: store.position(job_id) for job_id in ids if store.position(job_id) is not None}
    assert found[ids[2]] == 0 and found[ids[-1]] == len(ids) - 3
    assert store.positions([]) == {}


def test_blob_files_no_job_owns_are_deleted_at_start(tmp_path):
    """A crash between a request file's write and its row (or mid-write) leaves files no job owns."""
    from runtime.server.store import COMPLETED, Store

    blobs = tmp_path / "blobs"
    store = Store(str(tmp_path / "jobs.sqlite3"), str(blobs))
    store.add_job("kept", "gpt2", None, b"request")
    store.add_job("queued", "gpt2", None, b"request")
    store.claim_next()
    store.finish("kept", COMPLETED, result=b"result bytes")
    (blobs / "lost.request").write_bytes(b"written, never acknowledged")
    (blobs / "kept.result.tmp").write_bytes(b"half a result")
    assert store.drop_orphan_blobs() == 2
    assert sorted(p.name for p in blobs.iterdir()) == ["kept.result", "queued.request"]
