"""Model lifecycle: models load when a job first needs them and are evicted under a memory budget.

A real server hosting the tiny GPT-2 (~1.06 MB of weights) and the tiny Llama (~0.69 MB) with a
1.5 MB budget: only one fits at a time. ``GET /v1/models`` and ``nnsight.status()`` show the states.
"""
import threading

import httpx
import pytest
import torch

from serverproc import ServerProcess

PROMPT = "The Eiffel Tower is in the city of"


@pytest.fixture(scope="module")
def budget_server(tmp_path_factory, gpt2_path, llama_path):
    proc = ServerProcess(str(tmp_path_factory.mktemp("budget")), ["gpt2=%s" % gpt2_path, "llama=%s" % llama_path],
                         "--no-auth", "--memory-budget", "1.5MB")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def budget_config(budget_server):
    from nnsight import CONFIG

    old = CONFIG.API.HOST
    CONFIG.API.HOST = budget_server.host
    yield CONFIG
    CONFIG.API.HOST = old


def _states(server):
    models = httpx.get(server.url + "/v1/models", timeout=10).json()["models"]
    return {m["name"]: m["state"] for m in models}


def _logits(model, remote):
    with model.trace(PROMPT, remote=remote):
        logits = model.lm_head.output.save()
    return logits


def test_cold_until_used_then_evicted_least_recently_used(budget_server, budget_config, gpt2_path, llama_path):
    import nnsight
    from nnsight import LanguageModel

    gpt2, llama = LanguageModel(gpt2_path), LanguageModel(llama_path)
    assert _states(budget_server) == {"gpt2": "COLD", "llama": "COLD"}  # /ping answered before any load
    assert torch.equal(_logits(gpt2, True), _logits(gpt2, None))
    assert _states(budget_server) == {"gpt2": "READY", "llama": "COLD"}
    assert torch.equal(_logits(llama, True), _logits(llama, None))
    assert _states(budget_server) == {"gpt2": "EVICTED", "llama": "READY"}  # both do not fit
    assert torch.equal(_logits(gpt2, True), _logits(gpt2, None))  # loads again
    rows = nnsight.status(host=budget_server.host, show=False)
    assert {r["name"]: r["state"] for r in rows} == {"gpt2": "READY", "llama": "EVICTED"}


def test_queued_jobs_wait_for_a_load(budget_server, budget_config, gpt2_path, llama_path):
    """Jobs for an evicted model queued behind each other all run once it has loaded again."""
    from nnsight import LanguageModel

    llama = LanguageModel(llama_path)
    expected = _logits(llama, None)
    results, errors = [], []

    def client():
        try:
            results.append(_logits(llama, True))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    _logits(LanguageModel(gpt2_path), True)  # gpt2 in, llama out
    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(results) == 4
    assert all(torch.equal(r, expected) for r in results)


def test_a_model_larger_than_the_budget_fails_with_the_reason(gpt2_path):
    from runtime.server.lifecycle import FAILED, MemoryBudget, OverBudgetError
    from runtime.server.models import HostedModel

    budget = MemoryBudget(1_000_000)
    hosted = HostedModel("gpt2", gpt2_path)
    hosted.state = "COLD"
    budget.register(hosted)
    with pytest.raises(OverBudgetError, match="more than the server's memory budget"):
        budget.acquire(hosted)
    assert hosted.state == FAILED and hosted.model is None  # refused before loading anything
