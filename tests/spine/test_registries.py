"""Process-wide registries stay bounded: what a long-running server depends on (fast checks;
tests/soak/test_soak.py runs thousands of jobs)."""
import gc
import linecache

import torch

from compiler.ir import CodeUnit, Program, SourceLoc
from compiler.ir.nodes import Header
from nnsight import NNsight
from nnsight.tracing import compile as compile_site
from runtime import claims, registries
from runtime.builder import CompiledProgram


def _program(source="x = 1\n"):
    return Program(Header(), (CodeUnit(0, "trace", source, SourceLoc("<registries-test>", 1)),))


def test_sizes_name_every_registry_with_its_bound():
    sizes = registries.sizes()
    for name in ("runtime.claims.codes", "nnsight.tracing.compile.call_sites", "runtime.saves.marked",
                 "nnsight.tracing.tracebacks.header_codes", "linecache.no_file_sources",
                 "compiler.frontend.cache.programs", "nnsight.tracing.hookplan.opaque_codes"):
        assert name in sizes
    assert all(isinstance(n, int) and (bound is None or n <= bound) for n, bound in sizes.values())
    assert registries.over_bound() == {}


def test_claims_registry_forgets_a_program_when_it_is_dropped():
    gc.collect()  # programs earlier tests dropped leave now, not during the count
    before = registries.sizes()["runtime.claims.codes"][0]
    compiled = CompiledProgram(_program())
    code = compiled.units[0].code
    assert claims.unit_for_code(code) is compiled.units[0]
    assert registries.sizes()["runtime.claims.codes"][0] == before + 1
    del compiled
    gc.collect()
    assert claims.unit_for_code(code) is None
    assert registries.sizes()["runtime.claims.codes"][0] == before


def test_compile_cache_keeps_at_most_its_bound(monkeypatch):
    monkeypatch.setattr(compile_site, "CACHE_BOUND", 5)
    model = NNsight(torch.nn.Sequential(torch.nn.Linear(3, 3)))
    for i in range(12):
        filename = "<registries-site-%d>" % i
        source = "def job(model, x):\n    with model.trace(x):\n        y = model[0].output.save()\n    return y\n"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        ns = {}
        exec(compile(source, filename, "exec"), ns)
        assert ns["job"](model, torch.ones(1, 3)).shape == (1, 3)
        del linecache.cache[filename]
        assert registries.sizes()["nnsight.tracing.compile.call_sites"][0] <= 5


def test_linecache_entries_for_sources_without_a_file_are_bounded(monkeypatch):
    monkeypatch.setattr(registries, "LINECACHE_BOUND", 3)
    names = ["<registries-lines-%d>" % i for i in range(6)]
    for name in names:
        registries.remember_lines(name, (2, None, ["x\n"], name))
    assert [n in linecache.cache for n in names] == [False] * 3 + [True] * 3
    assert registries.made_lines(names[-1]) and not registries.made_lines(names[0])
    linecache.cache[names[-1]] = (2, None, ["y\n"], names[-1])  # someone else's entry now
    assert not registries.made_lines(names[-1])
    for name in names[3:]:
        linecache.cache.pop(name, None)


def test_barrier_releases_live_on_the_interleaver():
    import runtime.mediator as mediator

    assert not hasattr(mediator, "_released")
    from runtime.interleaver import Interleaver

    assert Interleaver().released == []
