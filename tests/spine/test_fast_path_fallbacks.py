"""Fast paths that fall back to their slow path are counted (compiler.fallbacks), and
reported in debug mode: a regression that sends every trace down the slow path must show."""
import importlib
import logging
import sys

import pytest
import torch

import nnsight
from compiler.fallbacks import FALLBACKS, NAMES
from compiler.frontend import fastpath


@pytest.fixture
def raw():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4))


@pytest.fixture
def net(raw):
    return nnsight.NNsight(raw)


def delta(before):
    after = FALLBACKS.counts()
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def test_every_fast_path_has_a_counter():
    counts = FALLBACKS.counts()
    assert set(counts) == set(NAMES) and all(isinstance(v, int) for v in counts.values())
    for name in ("frontend.lower", "frontend.with_chunk", "frontend.accesses", "hookplan.dynamic",
                 "generation.bytecode", "skip.opcode_target"):
        assert name in counts
    assert nnsight.fallback_report.fallback_counts() == counts
    with pytest.raises(KeyError, match="unknown fast path"):
        FALLBACKS.note("frontend.lowr")


def test_the_common_trace_takes_no_fallback(net):
    x = torch.randn(1, 4)
    before = FALLBACKS.counts()
    with net.trace(x):
        out = net[2].output.save()
    assert out.shape == (1, 4)
    assert delta(before) == {}


def test_a_declined_frontend_case_is_counted():
    before = FALLBACKS.counts()
    text = "x = 1\x0c\nwith model.trace(x):\n    y = model.output.save()\n"  # form feed: declined
    assert fastpath.try_lower(text, "<fallback-test>", 2) is None
    assert delta(before) == {"frontend.lower": 1}
    program = fastpath.lower(text, "<fallback-test>", 2)  # the libcst path still lowers it
    assert program.units and delta(before) == {"frontend.lower": 2}


def test_a_traced_file_with_a_form_feed_lowers_on_the_slow_path(net, raw, tmp_path, monkeypatch):
    (tmp_path / "ff_site.py").write_text(
        "\x0c\ndef run(model, x):\n    with model.trace(x):\n        out = model[0].output.save()\n    return out\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    mod = importlib.import_module("ff_site")
    try:
        before = FALLBACKS.counts()
        x = torch.randn(1, 4)
        out = mod.run(net, x)
        torch.testing.assert_close(out, raw[0](x))
        assert delta(before).get("frontend.lower") == 1
    finally:
        sys.modules.pop("ff_site", None)


def test_a_dynamic_hook_plan_is_counted_and_reported_in_debug_mode(net, raw, caplog, monkeypatch):
    monkeypatch.setattr(nnsight.CONFIG.APP, "DEBUG", True)
    x = torch.randn(1, 4)
    i = 2
    before = FALLBACKS.counts()
    with caplog.at_level(logging.WARNING, logger="nnsight.fastpaths"):
        with net.trace(x):
            out = net[i].output.save()  # the index is a variable: the plan can't name the module
    torch.testing.assert_close(out, raw(x))
    assert delta(before) == {"hookplan.dynamic": 1}
    assert any("hookplan.dynamic" in r.getMessage() for r in caplog.records)
