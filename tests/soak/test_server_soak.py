"""Server soak: a real ``nnsight-server`` (a subprocess on loopback) runs thousands of distinct
jobs from concurrent clients and stays flat: registries within their bounds, no weak registry
growing, resident memory flat, and its data directory (result files, SQLite rows) bounded by the
result TTL.

Each job is a new program at a new call site: a function generated with ``exec`` under its own
file name, saving one value (the tiny GPT-2's logit of one token, times a scale, plus the job's
own number), so every program and every answer differs and every answer is checked against a
local run. The test process traces each job with ``remote=True, blocking=False`` (the client's
real compile and submit path) and hands its ``tracer.backend`` to one of CLIENT_THREADS threads,
which follows the job's event stream and downloads and decodes the result; at most IN_FLIGHT jobs
are out at once, so the server's queue stays bounded. The server's own view comes from
``GET /v1/metrics``, sampled SAMPLES times.

The issue asks for 10,000 jobs. On this project's loaded 2-core CI machine the client and the
server together finish 10 to 17 jobs a second (client compile, server run, round trips), so by
default the test runs DEFAULT_JOBS (at most about three minutes with the server's start and the
final TTL wait); ``NNSIGHT_SOAK_JOBS=10000`` runs the full soak (measured there: 576 s at 17.4
jobs/s; server RSS 468 MiB after 500 jobs, 470 MiB from 1,500 jobs to the end; at most 347 jobs
and result files stored; SQLite and its log 4.3 MB; every registry flat from the half). The server
runs one job at a time and spends about 43 ms of CPU on each (measured under load), so more client
threads do not help: even a quiet 2-core machine would need an estimated 7 minutes or more for
10,000 jobs, which is why the default stays at DEFAULT_JOBS. A later 10,000-job run, sharing the
2 cores with other work (load average 9-12): 1,539 s (6.5 jobs/s); RSS 459 MiB after 500 jobs, 462 -> 466 MiB
over the second half; at most 197 jobs stored; SQLite 4.2 MB; ``runtime.claims.codes`` 65 -> 64.

Metrics are sampled with ``?collect=1`` (a full collection in the server first): finished programs
hold reference cycles, so without it a weak registry's size follows the collector's schedule (one
run saw ``runtime.claims.codes`` at 156 at the half and 500 at the end, all of it garbage).

Bounds asserted (server process, measured over the second half of the run, after warm-up):
RSS grows by less than RSS_BOUND_MIB; every registry of :func:`runtime.registries.sizes` is at or
under its stated bound at every sample, and the weak ones (no stated bound) and ``linecache`` grow
by at most WEAK_SLACK entries; stored jobs and blob files never exceed what finishes within the
TTL plus the expiry sweep's interval (plus the jobs in flight); the SQLite files grow by less than
DB_SLACK_BYTES; and once the TTL has passed after the last job, no job and no blob file is left.
"""
import collections
import concurrent.futures
import gc
import linecache
import math
import os
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "server"))
from serverproc import ServerProcess  # noqa: E402 - tests/server's helper, imported by path

pytestmark = pytest.mark.slow

DEFAULT_JOBS = 1200
JOBS = int(os.environ.get("NNSIGHT_SOAK_JOBS") or DEFAULT_JOBS)
CLIENT_THREADS = 8
IN_FLIGHT = 16
SAMPLES = 20
RESULT_TTL_S = 5.0
SWEEP_S = max(1.0, RESULT_TTL_S / 10)  # how often the worker deletes expired jobs
RSS_BOUND_MIB = 30
WEAK_SLACK = 16
DB_SLACK_BYTES = 1 << 20
PROMPT = "The soak test says"

TEMPLATE = '''\
def job(model, prompt):
    with model.trace(prompt, remote=True, blocking=False) as tracer:
        out_{i} = (model.lm_head.output[0, -1, {token}] * {scale} + {i}).save()
    return tracer.backend
'''


@pytest.fixture(scope="module")
def soak_server(tmp_path_factory, gpt2_path):
    data_dir = str(tmp_path_factory.mktemp("soak-server-data"))
    proc = ServerProcess(data_dir, ["gpt2=%s" % gpt2_path], "--no-auth", "--result-ttl", str(RESULT_TTL_S),
                         "--max-queue", str(4 * IN_FLIGHT), "--job-time-limit", "60")
    proc.start()
    yield proc
    proc.stop()


def _submit(model, i: int):
    """Trace job ``i`` (a fresh call site) with remote=True, blocking=False: its backend."""
    filename = "<server-soak-job-%d>" % i
    source = TEMPLATE.format(i=i, token=i % 50, scale=1 + i % 7)
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {}
    try:
        exec(compile(source, filename, "exec"), namespace)
        return namespace["job"](model, PROMPT)
    finally:
        del linecache.cache[filename]  # the user's own entry, as a notebook would drop a cell


def _expected(logits, i: int) -> float:
    return float(logits[i % 50]) * (1 + i % 7) + i


def _metrics(client):
    """The server's metrics after a full collection there: weak registries count what is reachable
    (finished programs hold cycles, which the collector frees in bursts)."""
    reply = client.get("/v1/metrics", params={"collect": "1"}, timeout=30)
    assert reply.status_code == 200, reply.text
    metrics = reply.json()
    metrics["time"] = time.monotonic()
    return metrics


def _other_lines(metrics) -> int:
    """linecache entries not made through :func:`runtime.registries.remember_lines` (bounded)."""
    return metrics["linecache_entries"] - metrics["registries"]["linecache.no_file_sources"]["size"]


def test_server_runs_thousands_of_distinct_jobs_with_flat_memory_and_bounded_state(soak_server, gpt2_path,
                                                                                    monkeypatch):
    import httpx
    import torch

    from nnsight import CONFIG, LanguageModel
    from runtime import registries

    monkeypatch.setattr(CONFIG.API, "HOST", soak_server.host)
    monkeypatch.setattr(CONFIG.API, "APIKEY", "")
    monkeypatch.setattr(CONFIG.APP, "REMOTE_LOGGING", False)
    model = LanguageModel(gpt2_path)
    with model.trace(PROMPT):
        logits = model.lm_head.output[0, -1].save()
    logits = logits.detach().double()

    failures = []
    slots = threading.Semaphore(IN_FLIGHT)

    def follow(i, backend):
        try:
            saved = backend.wait()
            got = float(saved["out_%d" % i])
            want = _expected(logits, i)
            if not math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-3):
                failures.append((i, got, want))
        except Exception as error:  # noqa: BLE001 - reported below
            failures.append((i, repr(error)))
        finally:
            slots.release()

    samples = []
    every = max(1, JOBS // SAMPLES)
    http = httpx.Client(base_url=soak_server.url)
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(CLIENT_THREADS) as pool:
        for i in range(JOBS):
            slots.acquire()
            pool.submit(follow, i, _submit(model, i))
            if i % every == every - 1:
                samples.append(_metrics(http))
                assert samples[-1]["over_bound"] == [], samples[-1]["over_bound"]
                assert len(failures) == 0, failures[:5]
    elapsed = time.monotonic() - start
    gc.collect()
    end = _metrics(http)
    samples.append(end)
    assert failures == [], failures[:5]
    assert end["jobs_done"] == JOBS
    assert end["over_bound"] == [] and registries.over_bound() == {}  # server and client

    rate = JOBS / elapsed
    half = samples[len(samples) // 2]
    mib = 2 ** 20
    rss = [s["rss_bytes"] / mib for s in samples]
    print("\nserver soak: %d jobs in %.1f s (%.1f jobs/s, %d client threads, %d in flight)"
          % (JOBS, elapsed, rate, CLIENT_THREADS, IN_FLIGHT))
    print("server soak: RSS MiB at each %d jobs: %s" % (every, " ".join("%.0f" % r for r in rss)))
    print("server soak: stored jobs %s; blob files %s; SQLite bytes %s"
          % ([s["jobs_stored"] for s in samples], [s["blob_files"] for s in samples],
             [s["db_bytes"] for s in samples]))
    print("server soak: registries at half %s" % {k: v["size"] for k, v in half["registries"].items()})
    print("server soak: registries at end  %s; linecache %d -> %d"
          % ({k: v["size"] for k, v in end["registries"].items()}, half["linecache_entries"],
             end["linecache_entries"]))

    # the weak registries (no stated bound) and linecache do not grow over the second half
    for name, entry in end["registries"].items():
        if entry["bound"] is None:
            assert entry["size"] <= half["registries"][name]["size"] + WEAK_SLACK, (name, half, end)
    # linecache: the entries the runtime made are a bounded registry above; none others grow
    assert _other_lines(end) <= _other_lines(half) + WEAK_SLACK, (_other_lines(half), _other_lines(end))
    assert end["event_subscribers"] <= IN_FLIGHT

    # the data directory: what finishes within the TTL and a sweep, plus the jobs in flight
    peak_rate = max((b["jobs_done"] - a["jobs_done"]) / (b["time"] - a["time"])
                    for a, b in zip(samples, samples[1:]) if b["time"] > a["time"])
    kept = math.ceil(2 * peak_rate * (RESULT_TTL_S + SWEEP_S + 1)) + IN_FLIGHT
    for s in samples:
        assert s["jobs_stored"] <= kept, (s["jobs_stored"], kept)
        assert s["blob_files"] <= kept, (s["blob_files"], kept)  # a result file per stored job at most
    assert end["db_bytes"] <= half["db_bytes"] + DB_SLACK_BYTES, (half["db_bytes"], end["db_bytes"])

    growth = (end["rss_bytes"] - half["rss_bytes"]) / mib
    assert growth < RSS_BOUND_MIB, "server RSS grew by %.1f MiB over the second half" % growth

    # after the TTL (and a sweep), every finished job is gone: rows, logs and blob files
    deadline = time.monotonic() + RESULT_TTL_S + 3 * SWEEP_S + 10
    while time.monotonic() < deadline:
        last = _metrics(http)
        if last["jobs_stored"] == 0 and last["blob_files"] == 0:
            break
        time.sleep(0.5)
    assert (last["jobs_stored"], last["blob_files"]) == (0, 0), last
    blobs = collections.Counter(name.rsplit(".", 1)[-1] for name in os.listdir(os.path.join(soak_server.data_dir,
                                                                                          "blobs")))
    assert not blobs, blobs
    http.close()
