# NNsight(module): invokes with tensors batch together; each invoke sees its own rows.
import torch
from nnsight import NNsight
from _common import num, emit

torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
model = NNsight(net)
x1, x2 = torch.randn(1, 3), torch.randn(2, 3)
with model.trace() as tracer:
    with tracer.invoke(x1):
        a = model[0].output.save()
    with tracer.invoke(x2):
        model[1].output[:] = 0
        b = model.output.save()
    with tracer.invoke():
        whole = model[0].output.save()
assert torch.allclose(a, net[0](x1))
assert torch.allclose(b, net[2](torch.zeros(2, 5)))
emit(a=list(a.shape), b=list(b.shape), whole=list(whole.shape), v=num(b))
