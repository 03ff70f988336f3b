"""Cost of the per-job integrity check (runtime/integrity.py) on the tiny GPT-2 and SmolLM2-135M.

    python benchmarks/integrity_cost.py [--reps N]

For each model (loaded as the server loads it: ``dispatch=True``, gradients off) prints the
median of ``snapshot()`` (before a job) and of ``changes()`` (after it), their sum, and the
median wall time of one small legitimate job served in-process through the accept path
(``remote='local'``'s path, which runs the same check) for scale; also the one-time cost of
the model's restore source (reading the safetensors headers; copying tensors the files lack)
and the memory those copies take. Times on a loaded machine are only comparable within a run.
"""
import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from timing import median_us  # noqa: E402 (benchmarks/ is on the path: the script's folder)


def _median_ms(fn, reps: int) -> float:
    return median_us(fn, reps) / 1000


def measure(label: str, path: str, layer_path: str, reps: int) -> None:
    from compiler.ir import parse_program
    from compiler.ir.request import Request, encode_request
    from compiler.ir.values import encode_value
    from nnsight import LanguageModel
    from nnsight.tracing.remote import LocalServer, model_key
    from runtime import integrity

    model = LanguageModel(path, dispatch=True)
    model._module.requires_grad_(False)
    start = time.perf_counter()
    integrity.snapshot(model)  # the first one also builds the restore source
    first_ms = (time.perf_counter() - start) * 1000
    pristine = integrity._LAYOUTS[model._module].pristine
    copied = sum(t.numel() * t.element_size() for t in pristine.copies.values())
    snap_ms = _median_ms(lambda: integrity.snapshot(model), reps)
    before = integrity.snapshot(model)
    check_ms = _median_ms(before.changes, reps)
    text = ('nnsight-ir 1\nproducer "bench"\npython "3.11.7"\nmin-python 3.9\ndynamic false\n\n'
            'binding model model "model"\n\nunit 0 trace at "bench.py":2:4 parent=none header=1:1 '
            'assigned=["out"]\n  | out = model.%s.output[0].sum().save()\n' % layer_path)
    request = Request(parse_program(text), model_key(model), "trace", encode_value(("Hello world",)),
                      encode_value({}))
    data = encode_request(request)
    server = LocalServer()
    server.host(model_key(model), model)
    server.handle(data)
    job_ms = _median_ms(lambda: server.handle(data), max(5, reps // 5))
    state = before
    print("%-14s tensors=%d modules=%d | first snapshot (+restore source) %.1f ms, copies %d bytes in %d tensors, "
          "from files %d | snapshot %.2f ms + check %.2f ms = %.2f ms per job | one small job %.1f ms (%.1f%%)"
          % (label, len(state.tensors), len(state.layout.modules), first_ms, copied, len(pristine.copies),
             len(pristine.files), snap_ms, check_ms, snap_ms + check_ms, job_ms,
             100 * (snap_ms + check_ms) / job_ms))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args()
    from nnsight.testing.smollm2 import smollm2_path
    from nnsight.testing.tiny_models import build_gpt2

    measure("tiny GPT-2", build_gpt2(), "transformer.h[0]", args.reps)
    measure("SmolLM2-135M", smollm2_path(), "model.layers[0]", args.reps)


if __name__ == "__main__":
    main()
