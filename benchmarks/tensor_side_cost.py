"""Cost of the tensor side's check (runtime/loader/tensor_side.py) per trace, through ``remote='local'``.

    python benchmarks/tensor_side_cost.py [--reps N]

Runs the tiny GPT-2 trace with 1 and with 12 saves through ``remote='local'`` (the accept path the
trusted tier runs), alternating rounds of three variants, and prints the median CPU time of a trace
(of this thread: the job runs in it, greenlets included):

* ``on``: as shipped -- the mode is on while request code runs, off while the model runs;
* ``off``: no mode at all (``tensor_side.guarding`` does nothing), as before the check existed;
* ``always``: the mode left on while the model runs too (what keeping it simple would cost).

Also the parts alone: one enter/leave pair of the mode (two per greenlet switch into request code),
and the tiny GPT-2's forward pass with the mode on and off (what the mode would add to the model).
Times on a loaded machine are only comparable within a run (the rounds alternate for that reason).
"""
import argparse
import contextlib
import os
import random
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from timing import median_us  # noqa: E402 (benchmarks/ is on the path: the script's folder)

PROMPT = "The Eiffel Tower is in"


def one_save(model):
    with model.trace(PROMPT, remote="local"):
        out = model.transformer.h[0].output[0].sum().save()
    return out


def twelve_saves(model):
    with model.trace(PROMPT, remote="local"):
        x = model.transformer.h[0].output[0]
        outs = [x[:, i % 3].sum().save() for i in range(6)]
        y = model.transformer.h[1].output[0]
        outs += [y[:, i % 3].sum().save() for i in range(6)]
    return outs


def _ms(fn, model) -> float:
    start = time.thread_time()
    fn(model)
    return (time.thread_time() - start) * 1000


@contextlib.contextmanager
def _no_mode(*args, **kwargs):
    yield None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=60, help="traces per variant and case")
    reps = parser.parse_args().reps

    import torch
    from nnsight import LanguageModel
    from nnsight.testing.tiny_models import build_gpt2
    from nnsight.tracing import interleaving
    from runtime.loader import tensor_side

    model = LanguageModel(build_gpt2())
    real_guarding, real_find = tensor_side.guarding, interleaving.active_side
    variants = {
        "on": (real_guarding, real_find),
        "off": (_no_mode, real_find),
        "always": (real_guarding, lambda: None),
    }
    cases = {"1 save": one_save, "12 saves": twelve_saves}
    times = {(case, v): [] for case in cases for v in variants}
    for fn in cases.values():  # warm-up (loads the model, fills the caches)
        for _ in range(3):
            fn(model)
    try:
        order = list(variants.items())
        for _ in range(reps):
            random.shuffle(order)  # (no variant always runs right after another)
            for case, fn in cases.items():
                for variant, (guarding, find) in order:
                    tensor_side.guarding, interleaving.active_side = guarding, find
                    times[(case, variant)].append(_ms(fn, model))
    finally:
        tensor_side.guarding, interleaving.active_side = real_guarding, real_find
    assert torch._C._len_torch_function_stack() == 0
    print("torch %s, %d traces per variant, load average %s" % (torch.__version__, reps, os.getloadavg()))
    for case in cases:
        med = {v: statistics.median(times[(case, v)]) for v in variants}
        print("%-9s on %.2f ms  off %.2f ms  always %.2f ms  (on - off %+.2f ms, always - off %+.2f ms)"
              % (case, med["on"], med["off"], med["always"], med["on"] - med["off"], med["always"] - med["off"]))
    _parts(model, reps)


def _parts(model, reps: int) -> None:
    import torch
    from runtime.loader.hosted_memory import HostedMemory
    from runtime.loader.tensor_side import _side_for

    side = _side_for(HostedMemory(model))
    ids = model.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    module = model._module

    def pair():
        side.enter()
        side.leave()

    def forward():
        with torch.no_grad():
            module(ids)

    def forward_on():
        side.enter()
        try:
            forward()
        finally:
            side.leave()

    x = torch.randn(1, 6, 64)

    def op():
        x[:, 1].sum()

    def op_on():
        side.enter()
        try:
            op()
        finally:
            side.leave()

    print("enter+leave pair: %.2f us" % median_us(pair, reps * 50))
    print("a slice and a sum of request code: off %.2f us, mode on %.2f us (enter+leave included)"
          % (median_us(op, reps * 50), median_us(op_on, reps * 50)))
    off, on = [], []
    for _ in range(reps):
        off.append(median_us(forward, 5))
        on.append(median_us(forward_on, 5))
    print("forward: off %.0f us, mode on %.0f us (+%.0f us)"
          % (statistics.median(off), statistics.median(on), statistics.median(on) - statistics.median(off)))


if __name__ == "__main__":
    main()
