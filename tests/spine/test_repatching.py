"""Re-applying a cached hook plan (runtime/interleaver.py `patch`'s fast path) never applies a stale
wrapper: a changed class forward, an instance forward set by the user, or a re-classed module are
each seen by the next trace, and the user's own forward is restored after it."""
import torch

from nnsight import NNsight


class Double(torch.nn.Module):
    def forward(self, x):
        return 2 * x


class Quadruple(Double):
    def forward(self, x):
        return 4 * x


def _read(model, x):
    with model.trace(x):
        out = model[0].output.save()
    return out


def test_changed_forwards_are_seen_by_the_next_trace():
    net = torch.nn.Sequential(Double(), torch.nn.Linear(3, 3))
    model = NNsight(net)
    x = torch.ones(1, 3)
    for _ in range(3):  # the second and third traces re-apply the cached plan
        assert torch.equal(_read(model, x), 2 * x)

    original = Double.forward
    Double.forward = lambda self, x: 3 * x
    try:
        assert torch.equal(_read(model, x), 3 * x)
    finally:
        Double.forward = original
    assert torch.equal(_read(model, x), 2 * x)

    mine = lambda x: 5 * x  # noqa: E731
    net[0].forward = mine
    assert torch.equal(_read(model, x), 5 * x)
    assert net[0].__dict__["forward"] is mine  # the user's forward is put back
    del net[0].forward
    assert torch.equal(_read(model, x), 2 * x)
    assert "forward" not in net[0].__dict__

    net[0].__class__ = Quadruple
    assert torch.equal(_read(model, x), 4 * x)
    assert torch.equal(net(x), net[1](4 * x))  # nothing left patched after the trace
