"""Tiers and per-key limits (``keys create/set``), the key database upgrade, and the audit log."""
import logging
import os
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

from serverproc import _env, create_key

from runtime.server import audit, keys, store as store_module
from runtime.server.config import ServerConfig
from runtime.server.store import Store


def cli(data_dir, *args, check=True):
    return subprocess.run([sys.executable, "-m", "runtime.server", *args, "--data-dir", data_dir],
                          capture_output=True, text=True, env=_env(), check=check, timeout=60)


def key_id_of(data_dir, name):
    listing = cli(data_dir, "keys", "list").stdout
    return [line for line in listing.splitlines() if line.endswith(" " + name)][0].split()


def test_a_key_database_from_before_tiers_keeps_its_keys_as_trusted(tmp_path):
    db = str(tmp_path / "jobs.sqlite3")
    old = sqlite3.connect(db)
    old.executescript(store_module._SCHEMA)  # the tables as the first release made them
    old.execute("INSERT INTO keys (id, hash, name, created) VALUES ('k_old', ?, 'legacy', 1.0)",
                (keys._hash("nns_legacy"),))
    old.execute("INSERT INTO jobs (id, model, key_id, status, created) VALUES ('j1', 'gpt2', 'k_old', 'QUEUED', 1.0)")
    old.commit()
    old.close()
    store = Store(db, str(tmp_path / "blobs"))
    assert keys.check(store, "nns_legacy") == "k_old"  # still accepted
    settings = keys.settings(store, ServerConfig(data_dir=str(tmp_path)), "k_old")
    assert settings.tier == keys.TRUSTED and settings.max_in_flight == ServerConfig.max_in_flight_per_key
    assert store.get("j1")["status"] == "QUEUED" and store.get("j1")["tier"] is None
    store.close()
    Store(db, str(tmp_path / "blobs")).close()  # a second upgrade is a no-op


def test_keys_create_set_and_list_tiers_and_limits(tmp_path):
    data = str(tmp_path)
    assert "created untrusted key" in cli(data, "keys", "create", "alice").stdout  # the default tier
    cli(data, "keys", "create", "bob", "--tier", "trusted", "--max-in-flight", "3", "--job-time-limit", "7.5")
    alice, bob = key_id_of(data, "alice"), key_id_of(data, "bob")
    assert alice[2] == "untrusted" and "in-flight=default" in alice
    assert bob[2] == "trusted" and "in-flight=3" in bob and "job-time=7.5s" in bob
    cli(data, "keys", "set", bob[0], "--tier", "untrusted", "--max-in-flight", "default", "--max-result-bytes", "99")
    bob = key_id_of(data, "bob")
    assert bob[2] == "untrusted" and "in-flight=default" in bob and "result-bytes=99" in bob
    store = Store(os.path.join(data, "jobs.sqlite3"), os.path.join(data, "blobs"))
    settings = keys.settings(store, ServerConfig(data_dir=data), bob[0])
    assert (settings.max_in_flight, settings.job_time_limit_s, settings.max_result_bytes) == (32, 7.5, 99)
    store.close()
    refused = cli(data, "keys", "set", "k_nothere", "--tier", "trusted", check=False)
    assert refused.returncode == 1 and "no key" in refused.stderr
    bad = cli(data, "keys", "create", "carol", "--max-in-flight", "0", check=False)
    assert bad.returncode == 2 and "positive" in bad.stderr


def test_no_auth_jobs_take_the_no_auth_tier(tmp_path):
    store = Store(str(tmp_path / "db"), str(tmp_path / "blobs"))
    assert keys.settings(store, ServerConfig(data_dir=""), None).tier == keys.TRUSTED
    assert keys.settings(store, ServerConfig(data_dir="", no_auth_tier="untrusted"), None).tier == keys.UNTRUSTED
    store.close()


def test_the_worker_picks_the_sandbox_for_untrusted_jobs_only(tmp_path):
    from runtime.sandbox.runner import TieredRunner
    from runtime.server.events import EventHub
    from runtime.server.models import Models
    from runtime.server.runner import InProcessRunner, JobRunner
    from runtime.server.worker import Worker

    store = Store(str(tmp_path / "db"), str(tmp_path / "blobs"))
    in_process, sandbox = InProcessRunner(lambda *a: None), JobRunner()

    def worker(mode, sandbox_runner):
        return Worker(ServerConfig(data_dir=str(tmp_path)), store, Models([]),
                      TieredRunner(mode, in_process, sandbox_runner), EventHub())

    plain = worker("per-key", None)  # no sandbox: in-process (and a loud start-up line)
    assert plain.runner_for(keys.UNTRUSTED) is in_process
    both = worker("per-key", sandbox)
    assert both.runner_for(keys.UNTRUSTED) is sandbox and both.runner_for(keys.TRUSTED) is in_process
    assert worker("always", sandbox).runner_for(keys.TRUSTED) is sandbox
    assert worker("never", sandbox).runner_for(keys.UNTRUSTED) is in_process
    store.close()


def test_audit_rows_expire_and_are_bounded(tmp_path):
    store = Store(str(tmp_path / "db"), str(tmp_path / "blobs"))
    for n in range(5):
        audit.record(store, audit.REFUSED, "k_x", "job%d" % n, "ServerRefusal", "reason %d" % n)
    assert [r["job_id"] for r in store.audit()] == ["job%d" % n for n in range(5)]
    assert store.expire_audit(3600.0, 3) == 2
    assert [r["job_id"] for r in store.audit()] == ["job2", "job3", "job4"]
    assert store.expire_audit(-1.0, 100) == 3 and store.audit() == []
    store.close()


def test_audit_since_accepts_durations_dates_and_epochs():
    now = 1_000_000.0
    assert audit.parse_since("2h", now) == now - 7200
    assert audit.parse_since("30m", now) == now - 1800
    assert audit.parse_since("12345", now) == 12345.0
    assert audit.parse_since("2026-01-02", now) == time.mktime(time.strptime("2026-01-02", "%Y-%m-%d"))
    with pytest.raises(ValueError, match="--since"):
        audit.parse_since("yesterday", now)


def test_the_server_says_loudly_that_untrusted_keys_run_in_process(tmp_path, caplog):
    from runtime.server import cli

    store = Store(str(tmp_path / "db"), str(tmp_path / "blobs"))
    keys.create(store, "stranger")  # untrusted by default
    config = ServerConfig(data_dir=str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="nnsight.server"):
        cli._warn_untrusted_in_process(config, store, object())  # a sandbox: nothing to say
        assert not caplog.records
        cli._warn_untrusted_in_process(config, store, None)  # `--sandbox never` with untrusted keys
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "1 untrusted API key(s) exist" in text and "IN THE SERVER PROCESS" in text
    store.close()


def program_bytes(gpt2, body: str) -> bytes:
    """A request for ``with model.trace(PROMPT): <body>`` written as IR text (a one-line body)."""
    from compiler.ir import parse_program
    from compiler.ir.request import Request, encode_request
    from compiler.ir.values import encode_value
    from nnsight.tracing.remote import model_key

    text = ('nnsight-ir 1\nproducer "test"\npython "3.11.7"\nmin-python 3.9\ndynamic false\n\n'
            'binding model model "model"\n\nunit 0 trace at "job.py":2:4 parent=none header=1:1 assigned=["out"]\n'
            + "".join("  | %s\n" % line for line in body.split("\n")))
    request = Request(parse_program(text), model_key(gpt2), "trace", encode_value(("Hello",)), encode_value({}))
    return encode_request(request)


def test_refusals_and_limit_hits_are_audited_by_key_id(server, gpt2):
    key = create_key(server.data_dir, "audited", "--max-in-flight", "1")
    key_id = key_id_of(server.data_dir, "audited")[0]
    headers = {"ndif-api-key": key}
    payload = program_bytes(gpt2, "out = model.lm_head.output.sum().save()")
    first = httpx.post(server.url + "/v1/requests", content=program_bytes(gpt2, "while True:\n    pass"),
                       headers=headers)
    assert first.status_code == 202
    second = httpx.post(server.url + "/v1/requests", content=payload, headers=headers)
    assert second.status_code == 429 and "1 jobs" in second.json()["message"]
    job_url = server.url + "/v1/requests/" + first.json()["id"]
    deadline = time.monotonic() + 30
    while httpx.get(job_url, headers=headers).json()["status"] != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.05)  # (a running job is killed; a queued one is only cancelled)
    httpx.delete(job_url, headers=headers)
    assert httpx.post(server.url + "/v1/requests", content=payload,
                      headers={"ndif-api-key": "nns_wrong"}).status_code == 401
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = cli(server.data_dir, "audit", "--since", "10m", "--key", key_id).stdout
        if "killed" in rows:
            break
        time.sleep(0.2)
    assert "too_many_jobs" in rows and "killed" in rows and key not in rows, rows
    everyone = cli(server.data_dir, "audit", "--since", "10m").stdout
    assert "fp_" + keys._hash("nns_wrong")[:12] in everyone and "nns_wrong" not in everyone


def test_a_gradient_session_runs_for_a_trusted_key_and_is_refused_before_it_runs_for_an_untrusted_one(
        server, remote_config, gpt2_path):
    """One ``--sandbox per-key`` server: the trusted key's gradients equal a local run's; the untrusted
    key's job (its IR has the ``backward`` fact) is refused before it runs, audited as ``refused``."""
    import torch

    from nnsight import LanguageModel

    model = LanguageModel(gpt2_path, dispatch=True)
    model.requires_grad_(False)  # as the server hosts it

    def run(remote):
        with model.trace("Hello world", remote=remote):
            print("started")
            hs = model.transformer.h[0].output
            hs.requires_grad = True
            with model.lm_head.output.sum().backward():
                grad = hs.grad.save()
        return grad

    local = run(None)
    assert torch.equal(run(True), local) and local.abs().sum() > 0  # the trusted tier (remote_config's key)
    untrusted = create_key(server.data_dir, "gradients-untrusted")
    key_id = key_id_of(server.data_dir, "gradients-untrusted")[0]
    remote_config.API.APIKEY = untrusted
    with pytest.raises(Exception, match="refused before it ran") as info:
        run(True)
    assert "gradients cannot flow through the hosted model in the untrusted tier" in str(info.value)
    rows = cli(server.data_dir, "audit", "--since", "10m", "--key", key_id).stdout
    assert "refused" in rows and "UntrustedTierRefusal" in rows, rows
