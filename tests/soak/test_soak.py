"""Soak: a process that runs thousands of distinct traces keeps its registries bounded and its
memory flat (what a server running for months needs).

Each job is a new program at a new call site: a function generated with ``exec`` under its own
file name, so the frontend lowers it, the runtime builds it, and every per-call-site cache sees a
new key. Jobs alternate between plain local traces (the cheap path) and ``remote='local'`` traces
(closed over, encoded, decoded by the in-process server, run, result encoded back: the
expensive path), on the tiny GPT-2. The issue asks for 10,000 jobs; on this project's 2-core CI
takes minutes (about 20 ms a local job and 45 ms a remote one there), so the test runs
LOCAL_JOBS local traces and REMOTE_JOBS remote ones (about 40 s there); set NNSIGHT_SOAK_JOBS to run that
many of each (``NNSIGHT_SOAK_JOBS=10000`` for the full soak). The compile cache's bound is
lowered to CALL_SITES so that the caches reach their steady state during the warm-up (with the
default 1024 call sites that takes over 2,000 jobs); every other bound is the real one.

Asserted: no registry of :func:`runtime.registries.sizes` is over its stated bound at any
checkpoint; the weak ones (no stated bound: they hold what live programs hold) do not grow
over the second half; and the process's resident memory grows by less than RSS_BOUND_MIB
over the second half.
"""
import gc
import linecache
import os

import pytest

pytestmark = pytest.mark.slow

SCALE = int(os.environ.get("NNSIGHT_SOAK_JOBS", "0"))
LOCAL_JOBS = SCALE or 800
REMOTE_JOBS = SCALE or 250
RSS_BOUND_MIB = 20
CALL_SITES = 100

TEMPLATE = '''\
def job(model, prompt):
    with model.trace(prompt{remote}):
        h = model.transformer.h[{layer}].output[0]
        scaled_{i} = (h * {scale}).sum()
        out = model.lm_head.output[0, -1, {token}].save()
        total = (scaled_{i} + out).save()
    return total
'''


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _run(model, i: int, remote: bool) -> float:
    filename = "<soak-job-%d>" % i
    source = TEMPLATE.format(remote=', remote="local"' if remote else "", layer=i % 2, i=i,
                             scale=1 + i % 7, token=i % 50)
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {}
    try:
        exec(compile(source, filename, "exec"), namespace)
        return float(namespace["job"](model, "a").detach())
    finally:
        del linecache.cache[filename]  # the user's own entry, as a notebook would drop a cell


def _check_registries(sizes, baseline=None):
    from runtime import registries

    assert registries.over_bound() == {}
    if baseline is not None:
        for name, (n, bound) in sizes.items():
            if bound is None:
                assert n <= baseline[name][0] + 16, (name, baseline[name][0], n)


def test_thousands_of_distinct_jobs_keep_registries_bounded_and_memory_flat(gpt2_path, monkeypatch):
    from nnsight import LanguageModel
    from nnsight.tracing import compile as compile_site
    from runtime import registries

    monkeypatch.setattr(compile_site, "CACHE_BOUND", CALL_SITES)

    model = LanguageModel(gpt2_path)
    jobs = [(i, False) for i in range(LOCAL_JOBS)] + [(LOCAL_JOBS + i, True) for i in range(REMOTE_JOBS)]
    # interleave the two paths evenly
    jobs.sort(key=lambda job: (job[0] if not job[1] else (job[0] - LOCAL_JOBS) * LOCAL_JOBS / REMOTE_JOBS))
    half = len(jobs) // 2
    warm = len(jobs) // 5
    first = None
    rss_half = rss_warm = None
    for k, (i, remote) in enumerate(jobs):
        value = _run(model, i, remote)
        assert value == value and value != 0.0  # a real number came back
        if k == warm:
            gc.collect()
            rss_warm = _rss_mib()
        if k == half:
            gc.collect()
            rss_half = _rss_mib()
            first = registries.sizes()
            _check_registries(first)
    gc.collect()
    rss_end = _rss_mib()
    end = registries.sizes()
    _check_registries(end, first)
    assert end["runtime.saves.marked"][0] == 0
    assert end["nnsight.tracing.compile.call_sites"][0] <= CALL_SITES
    growth = rss_end - rss_half
    print("\nsoak: %d local + %d remote='local' jobs; RSS %.1f MiB after warm-up, %.1f at half, %.1f at end"
          % (LOCAL_JOBS, REMOTE_JOBS, rss_warm, rss_half, rss_end))
    print("soak: registries at end: %s" % {k: v[0] for k, v in end.items()})
    assert growth < RSS_BOUND_MIB, "RSS grew by %.1f MiB over the second half" % growth
