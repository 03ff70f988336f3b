"""Cost of refusing aliases of the hosted model's memory (runtime/loader/hosted_memory.py), per job.

    python benchmarks/hosted_memory_cost.py [--reps N]

Serves three small legitimate jobs on the tiny GPT-2 through the in-process accept path (what the
trusted tier and ``remote='local'`` run), alternating rounds with the checks on and off (off: the
loader gets no :class:`HostedMemory`, as before the checks existed), and prints the median CPU time of
each job (of the serving thread) and the difference:

* ``plain``: reads one layer's output (no alias route: what most jobs pay);
* ``attrs``: 300 attribute reads of request code (each read's value passes a type check);
* ``numpy``: ``.numpy()`` and numpy functions on an activation (the request's first check compares
  the weights' data pointers with the cached hosted set; every numpy call scans its arguments for tensors over hosted memory).

Also the parts alone: computing a model's hosted set (once per model), the staleness check of a
request's first check, one attribute-value check and one numpy argument scan. Times on a loaded
machine are only comparable within a run (the rounds alternate for that reason).
"""
import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from timing import median_us  # noqa: E402 (benchmarks/ is on the path: the script's folder)

JOBS = {
    "plain": ("", "out = model.transformer.h[0].output[0].sum().save()"),
    "attrs": ("", "x = model.transformer.h[0].output[0]\nn = 0\nfor i in range(100):\n"
                  "    n += x.shape[0] + x.ndim + len(x.dtype.__repr__())\nout = x.sum().save()"),
    "numpy": ('binding np module "numpy"',
              "x = model.transformer.h[0].output[0].detach()\na = x.numpy()\nm = float(np.mean(np.asarray(x)))\n"
              "s = float(np.sum(a))\nout = x.sum().save()"),
}


def _ms(fn) -> float:
    """CPU time of this thread (the job runs in it, greenlets included): steadier than wall time
    on a loaded machine, where other processes' time would land in a wall-clock measurement."""
    start = time.thread_time()
    fn()
    return (time.thread_time() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=200, help="jobs per variant and case")
    reps = parser.parse_args().reps

    import numpy as np
    import torch

    from compiler.ir import parse_program
    from compiler.ir.request import Request, encode_request
    from compiler.ir.values import encode_value
    from nnsight import LanguageModel
    from nnsight.testing.tiny_models import build_gpt2
    from nnsight.tracing.remote import LocalServer, model_key
    from runtime.loader import hosted_memory, loader

    model = LanguageModel(build_gpt2(), dispatch=True)
    model._module.requires_grad_(False)
    server = LocalServer()
    server.host(model_key(model), model)
    payloads = {}
    for name, (bindings, body) in JOBS.items():
        unit = "\n".join("  | " + line for line in body.split("\n"))
        text = ('nnsight-ir 1\nproducer "bench"\npython "3.11.7"\nmin-python 3.9\ndynamic false\n\n'
                'binding model model "model"\n%s\n\nunit 0 trace at "bench.py":2:4 parent=none header=1:1 '
                'assigned=["out"]\n%s\n' % (bindings, unit))
        payloads[name] = encode_request(Request(parse_program(text), model_key(model), "trace",
                                                encode_value(("Hello world",)), encode_value({})))
    real = loader.HostedMemory
    variants = {"with": real, "without": lambda model: None}
    for data in payloads.values():  # warm-up, both variants
        for make in variants.values():
            loader.HostedMemory = make
            server.handle(data)
    times = {(case, v): [] for case in payloads for v in variants}
    for _ in range(reps):  # alternate: a load spike hits both variants alike
        for case, data in payloads.items():
            for v, make in variants.items():
                loader.HostedMemory = make
                times[case, v].append(_ms(lambda: server.handle(data)))
    loader.HostedMemory = real

    print("tiny GPT-2 (%d tensors), %d jobs per variant, medians of the thread's CPU time (ms):" % (
        len(list(model._module.parameters())) + len(list(model._module.buffers())), reps))
    print("%-8s %10s %10s %12s" % ("job", "without", "with", "added (us)"))
    for case in payloads:
        a, b = statistics.median(times[case, "without"]), statistics.median(times[case, "with"])
        print("%-8s %10.3f %10.3f %12.1f" % (case, a, b, (b - a) * 1000))

    root = model._module
    cold = []
    for _ in range(20):
        hosted_memory._STORAGES.pop(root, None)
        cold.append(median_us(lambda: hosted_memory.hosted_storages(root), 1))
    warm = median_us(lambda: hosted_memory.hosted_storages(root), 200)
    memory = real(model)
    x = torch.randn(4, 4)
    attr = median_us(lambda: [memory.checked(x) for _ in range(1000)], 50) / 1000
    fn = memory.checked(np.asarray)
    scan = median_us(lambda: [memory.check_args((x,), {}, "") for _ in range(1000)], 50) / 1000
    call_raw = median_us(lambda: [np.asarray(x) for _ in range(1000)], 20) / 1000
    call_checked = median_us(lambda: [fn(x) for _ in range(1000)], 20) / 1000
    print("hosted set, computed once per model: %.1f us; checked current at a request's first check: %.1f us"
          % (statistics.median(cold), warm))
    print("one attribute value check: %.3f us; one numpy argument scan (a tensor): %.3f us" % (attr, scan))
    print("np.asarray(tensor): %.2f us raw, %.2f us checked" % (call_raw, call_checked))


if __name__ == "__main__":
    main()
