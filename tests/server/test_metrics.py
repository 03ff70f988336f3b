"""``GET /v1/metrics``: registry sizes and bounds, memory, queue and data-dir size, behind the key."""
import httpx


def _metrics(server, key):
    return httpx.get(server.url + "/v1/metrics", headers={"ndif-api-key": key} if key else {}, timeout=30)


def test_metrics_need_a_key(server):
    assert _metrics(server, None).status_code == 401
    assert _metrics(server, "nns_not_a_key").json()["code"] == "bad_api_key"


def test_metrics_report_registries_memory_and_the_jobs_run(server, api_key, remote_config, gpt2):
    before = _metrics(server, api_key).json()
    with gpt2.trace("Metrics count this job", remote=True):
        out = gpt2.lm_head.output[0, -1, 3].save()
    assert float(out) == float(out)
    after = _metrics(server, api_key).json()

    assert after["jobs_done"] >= before["jobs_done"] + 1
    assert after["jobs_stored"] >= 1 and after["blob_files"] >= 1  # its result, until the TTL
    assert after["rss_bytes"] > 50 * 2 ** 20  # a process with a model loaded
    assert after["db_bytes"] > 0 and after["result_ttl_s"] > 0
    assert after["queue"] == 0 and after["over_bound"] == []
    registries = after["registries"]
    assert registries["linecache.no_file_sources"]["bound"] == 512
    assert registries["runtime.saves.marked"] == {"size": 0, "bound": None}
    assert all(set(entry) == {"size", "bound"} for entry in registries.values())


def test_metrics_after_a_collection_count_only_reachable_entries(server, api_key, remote_config, gpt2):
    """``?collect=1``: a full collection first, so a weak registry never counts garbage."""
    for i in range(3):  # distinct programs: each leaves a finished program (with cycles) behind
        with gpt2.trace("Collect %d" % i, remote=True):
            out = gpt2.lm_head.output[0, -1, i].save()
        assert float(out) == float(out)
    plain = _metrics(server, api_key).json()
    reply = httpx.get(server.url + "/v1/metrics", params={"collect": "1"}, headers={"ndif-api-key": api_key},
                      timeout=30)
    assert reply.status_code == 200
    collected = reply.json()
    assert set(collected) == set(plain)
    codes = "runtime.claims.codes"
    assert collected["registries"][codes]["size"] <= plain["registries"][codes]["size"]
