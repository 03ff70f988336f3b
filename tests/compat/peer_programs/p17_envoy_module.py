# Envoy(module) over a plain torch module.
import torch
from nnsight.intervention.envoy import Envoy
from _common import num, emit

torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
env = Envoy(net)
x = torch.randn(3, 4)
with env.trace(x):
    h = env[0].output.save()
    env[1].output[:] = 1.0
    out = env.output.save()
expect = net[2](torch.ones(3, 8))
assert torch.allclose(out, expect)
assert torch.allclose(h, net[0](x))
emit(out=num(out))
