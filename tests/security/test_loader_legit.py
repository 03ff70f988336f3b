"""What the guards must keep working: ordinary Python in a request, with its own private state."""
import pytest
import torch

from loader_attacks import ir_text, payload, serve

LIB = '''
    definition 0 "Scaler" module="lib" at "lib.py":1:0
      global torch module "torch"
      | class Scaler(torch.nn.Module):
      |     def __init__(self, factor):
      |         super().__init__()
      |         self._factor = factor
      |         self._calls = 0
      |
      |     def __setattr__(self, name, value):
      |         super().__setattr__(name, value)
      |
      |     def __getattr__(self, name):
      |         return super().__getattr__(name)
      |
      |     def forward(self, x):
      |         self._calls += 1
      |         return x * self._factor
    definition 1 "Point" module="lib" at "lib.py":20:0
      global dataclasses module "dataclasses"
      | @dataclasses.dataclass(frozen=True)
      | class Point:
      |     x: int
      |     y: int = 0
      |
      |     def __post_init__(self):
      |         object.__setattr__(self, "y", self.x * 2)
    '''

BODY = '''
import torch.nn.functional as F
from torch import nn
import logging
logging.getLogger("lib").debug("starting %s", 1)
s = Scaler(2.0)
h = model.transformer.h[0].output[0]
out = s(F.relu(h)).sum().save()
calls = nnsight.save(getattr(s, "_calls"))
p = Point(3)
label = nnsight.save("{0.x}-{0.y}-{1}".format(p, type(p).__name__))
names = nnsight.save(sorted(n for n in vars(s) if n in ("_factor", "_calls", "_nope")))
public = nnsight.save(all(not n.startswith("_") or n.endswith("__") for n in dir(torch)))
is_linear = nnsight.save(isinstance(model.transformer.h[0].mlp.c_fc, nn.Module) or True)
hook = nnsight.save((getattr(model, "_hf_hook", "absent"), hasattr(torch, "_C"), hasattr(s, "_factor")))
'''


@pytest.fixture(scope="module")
def local_relu(gpt2):
    with gpt2.trace("The Eiffel Tower is in"):
        local = torch.nn.functional.relu(gpt2.transformer.h[0].output[0]).mul(2.0).sum().save()
    return local


def test_ordinary_code_with_private_state_runs(gpt2, local_relu):
    bindings = 'binding Scaler class 0\nbinding Point class 1\nbinding nnsight module "nnsight"\n' \
               'binding torch module "torch"'
    assigned = ["F", "nn", "logging", "s", "h", "out", "calls", "p", "label", "names", "public", "is_linear", "hook"]
    result = serve(gpt2, payload(gpt2, ir_text(BODY, bindings, LIB, assigned=assigned)))
    assert torch.allclose(result["out"], local_relu)
    assert result["calls"] == 1
    assert result["label"] == "3-6-Point"
    assert result["names"] == ["_calls", "_factor"]
    assert result["public"] is True
    assert result["hook"] == ("absent", False, True)  # a server's private name is absent, yours is there
