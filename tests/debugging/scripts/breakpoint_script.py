"""breakpoint() inside an invoke (tests/debugging/test_breakpoint.py)."""
import torch

from nnsight import NNsight

model = NNsight(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)))
x = torch.ones(2, 4)


def run():
    with model.trace() as tracer:
        with tracer.invoke(x):
            hidden = model[0].output
            breakpoint()
            out = model[2].output.save()
    return out


print("done", tuple(run().shape))
