"""Payload size of a remote request vs cloudpickle, on the seeds' ``normalize`` example.

    python benchmarks/payload_size.py [--show]

Writes the seeds' ``mymethods`` module (``normalize`` and ``RunningStats``) to a
temporary directory (not installed), runs the seeds' trace on the offline tiny
GPT-2 with ``remote='local'``, and compares the request bytes the client would
send (``tracer.remote_payload``: the whole program -- trace body, ``normalize``
by value, model key, inputs) with ``cloudpickle.dumps`` of the same function
and data (``normalize`` registered to be pickled by value, and the prompt).
Prints both sizes and the ratio; exits 1 if the request is larger. A second,
informational case adds a captured steering vector (a float32 tensor).
"""
import argparse
import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MYMETHODS = '''\
import torch


def normalize(x, dim=-1, eps=1e-8):
    """Normalize a tensor to unit norm."""
    return x / (x.norm(dim=dim, keepdim=True) + eps)


class RunningStats:
    """Accumulate running mean/variance over batches."""

    def __init__(self):
        self.count = 0
        self._mean = None

    def add(self, x):
        self.count += 1
        m = x.mean(0)
        self._mean = m if self._mean is None else self._mean + (m - self._mean) / self.count
'''


def seeds_example(model, normalize):
    with model.trace("Hello", remote="local") as tracer:
        hidden = model.transformer.h[0].output[0]
        normed = normalize(hidden)
        result = normed.save()
    return tracer, result


def steering_example(model, normalize, vector):
    with model.trace("Hello", remote="local") as tracer:
        hidden = model.transformer.h[0].output[0]
        model.transformer.h[0].output[0][:] = normalize(hidden + vector)
        result = model.lm_head.output.save()
    return tracer, result


def report(label, ours, theirs):
    ratio = ours / theirs
    print("%-34s request %6d bytes   cloudpickle %6d bytes   ratio %.3f" % (label, ours, theirs, ratio))
    return ratio


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--show", action="store_true", help="print the request's text form")
    args = parser.parse_args(argv)

    import cloudpickle
    import torch

    from compiler.ir.request import decode_request, print_request
    from nnsight import LanguageModel
    from nnsight.testing.tiny_models import build_gpt2

    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "mymethods.py"), "w", encoding="utf-8") as f:
            f.write(MYMETHODS)
        sys.path.insert(0, tmp)
        import mymethods

        model = LanguageModel(build_gpt2())
        tracer, result = seeds_example(model, mymethods.normalize)
        norms = result.norm(dim=-1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5), "the example did not run correctly"
        ours = len(tracer.remote_payload)
        cloudpickle.register_pickle_by_value(mymethods)
        theirs = len(cloudpickle.dumps((mymethods.normalize, "Hello")))
        if args.show:
            print(print_request(decode_request(tracer.remote_payload)))
        ratio = report("seeds' normalize example", ours, theirs)

        torch.manual_seed(0)
        vector = torch.randn(64)
        tracer2, _ = steering_example(model, mymethods.normalize, vector)
        report("+ a 64-float steering vector", len(tracer2.remote_payload),
               len(cloudpickle.dumps((mymethods.normalize, "Hello", vector))))
        cloudpickle.unregister_pickle_by_value(mymethods)
        sys.path.remove(tmp)

    if ratio > 1.0:
        print("FAIL: the request is larger than cloudpickle's payload")
        return 1
    print("OK: the request is no larger than cloudpickle's payload")
    return 0


if __name__ == "__main__":
    sys.exit(main())
