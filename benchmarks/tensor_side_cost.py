"""Cost of the tensor side's check (runtime/loader/tensor_side.py) per trace, through ``remote='local'``.

    python benchmarks/tensor_side_cost.py [--reps N]

Runs the tiny GPT-2 trace with 1 and with 12 saves through ``remote='local'`` (the accept path the
trusted tier runs), alternating rounds of three variants, and prints the median CPU time of a trace
(of this thread: the job runs in it, greenlets included):

* ``on``: as shipped -- the mode is on while request code runs, off while the model runs;
* ``off``: no mode at all (``tensor_side.guarding`` does nothing), as before the check existed;
* ``always``: the mode left on while the model runs too (what keeping it simple would cost).

Times on a loaded machine are only comparable within a run (the rounds alternate for that reason).
"""
import argparse
import contextlib
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROMPT = "The Eiffel Tower is in"


def one_save(model):
    with model.trace(PROMPT, remote="local"):
        out = model.transformer.h[0].output[0].sum().save()
    return out


def twelve_saves(model):
    with model.trace(PROMPT, remote="local"):
        outs = [model.transformer.h[i % 2].output[0][:, i % 3].sum().save() for i in range(12)]
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
    real_guarding, real_suspended = tensor_side.guarding, interleaving.suspended
    variants = {
        "on": (real_guarding, real_suspended),
        "off": (_no_mode, real_suspended),
        "always": (real_guarding, _no_mode),
    }
    cases = {"1 save": one_save, "12 saves": twelve_saves}
    times = {(case, v): [] for case in cases for v in variants}
    for fn in cases.values():  # warm-up (loads the model, fills the caches)
        for _ in range(3):
            fn(model)
    try:
        for _ in range(reps):
            for case, fn in cases.items():
                for variant, (guarding, suspended) in variants.items():
                    tensor_side.guarding, interleaving.suspended = guarding, suspended
                    times[(case, variant)].append(_ms(fn, model))
    finally:
        tensor_side.guarding, interleaving.suspended = real_guarding, real_suspended
    assert torch._C._len_torch_function_stack() == 0
    print("torch %s, %d traces per variant, load average %s" % (torch.__version__, reps, os.getloadavg()))
    for case in cases:
        med = {v: statistics.median(times[(case, v)]) for v in variants}
        print("%-9s on %.2f ms  off %.2f ms  always %.2f ms  (on - off %+.2f ms, always - off %+.2f ms)"
              % (case, med["on"], med["off"], med["always"], med["on"] - med["off"], med["always"] - med["off"]))


if __name__ == "__main__":
    main()
