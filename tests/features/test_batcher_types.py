"""Narrowing keeps container types: `runtime.batcher._map` on ModelOutput / diffusers BaseOutput
(dict + dataclass, `None` fields without defaults), plain and frozen dataclasses, namedtuples and
dict subclasses; and end to end, each invoke's `.output` of a module returning such a value."""
import dataclasses
from collections import OrderedDict, defaultdict, namedtuple
from typing import List, Optional

import pytest
import torch

from nnsight import NNsight
from runtime.batcher import _map

diffusers = pytest.importorskip("diffusers")
from diffusers.utils import BaseOutput  # noqa: E402
from transformers.modeling_outputs import CausalLMOutputWithPast  # noqa: E402
from transformers.utils import ModelOutput  # noqa: E402


def cut(t):
    return t[1:3] if t.dim() > 0 and t.shape[0] == 4 else t


@dataclasses.dataclass
class NoDefaults(BaseOutput):  # like diffusers' pipeline outputs: every field required
    sample: torch.Tensor
    mask: Optional[torch.Tensor]


@dataclasses.dataclass
class LMOut(ModelOutput):
    logits: Optional[torch.Tensor] = None
    hidden: Optional[torch.Tensor] = None
    loss: Optional[torch.Tensor] = None


@dataclasses.dataclass(frozen=True)
class Frozen:
    hidden: torch.Tensor
    scale: float
    parts: List[torch.Tensor] = dataclasses.field(default_factory=list)
    derived: int = dataclasses.field(init=False, default=7)


@dataclasses.dataclass
class Plain:
    hidden: torch.Tensor
    other: Optional[torch.Tensor]


Pair = namedtuple("Pair", "a b")


def test_model_output_keeps_type_keys_and_attribute_views():
    full = torch.arange(4.0).reshape(4, 1)
    value = CausalLMOutputWithPast(logits=full, past_key_values=None)
    out = _map(value, cut)
    assert type(out) is CausalLMOutputWithPast
    assert list(out.keys()) == list(value.keys()) == ["logits"]
    assert torch.equal(out.logits, full[1:3]) and out["logits"] is out.logits and out[0] is out.logits
    assert out.loss is None and out.past_key_values is None and len(out.to_tuple()) == 1
    assert value.logits is full  # the original is untouched


def test_base_output_with_required_none_field_is_not_a_dict():
    # type(value)(**items) fails here: `mask` is None, so not a key, and has no default
    value = NoDefaults(sample=torch.zeros(4, 2), mask=None)
    out = _map(value, cut)
    assert type(out) is NoDefaults
    assert list(out.keys()) == ["sample"] and out.sample.shape == (2, 2) and out.mask is None
    with pytest.raises(TypeError):
        NoDefaults(**dict(value))


def test_dataclasses_are_mapped_and_keep_their_type():
    value = Frozen(torch.zeros(4, 3), 0.5, [torch.ones(4), torch.ones(2)])
    out = _map(value, cut)
    assert type(out) is Frozen and out.scale == 0.5 and out.derived == 7
    assert out.hidden.shape == (2, 3) and [p.shape[0] for p in out.parts] == [2, 2]
    assert value.hidden.shape == (4, 3)
    untouched = Plain(hidden=None, other=None)
    assert _map(untouched, cut) is untouched  # nothing to narrow: the same object


def test_other_containers():
    out = _map(Pair(torch.zeros(4), 3), cut)
    assert type(out) is Pair and out.a.shape == (2,) and out.b == 3
    od = _map(OrderedDict([("z", torch.zeros(4)), ("a", torch.zeros(4))]), cut)
    assert type(od) is OrderedDict and list(od) == ["z", "a"] and od["a"].shape == (2,)
    dd = _map(defaultdict(list, x=torch.zeros(4)), cut)
    assert type(dd) is defaultdict and dd.default_factory is list and dd["x"].shape == (2,)
    nested = _map((dict(out=LMOut(logits=torch.zeros(4, 5))), [torch.zeros(4)]), cut)
    assert type(nested[0]["out"]) is LMOut and nested[0]["out"].logits.shape == (2, 5)


# ------------------------------------------------------------------ end to end: invokes


class Head(torch.nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind

    def forward(self, h):
        if self.kind == "base":
            return NoDefaults(sample=h * 2, mask=None)
        if self.kind == "model":
            return LMOut(logits=h * 2, hidden=h)
        return Plain(hidden=h * 2, other=None)


class Net(torch.nn.Module):
    def __init__(self, kind):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 4)
        self.head = Head(kind)

    def forward(self, x):
        out = self.head(self.lin(x))
        return (out.sample if isinstance(out, NoDefaults) else out.logits if isinstance(out, LMOut)
                else out.hidden) + 1


@pytest.mark.parametrize("kind", ["base", "model", "plain"])
def test_each_invoke_gets_its_rows_of_a_dataclass_output(kind):
    net = Net(kind)
    model = NNsight(net)
    x = torch.randn(4, 4)
    with torch.no_grad():
        ref = net.head(net.lin(x))  # plain torch: the whole batch's head output
    field = {"base": "sample", "model": "logits", "plain": "hidden"}[kind]
    with model.trace() as tracer:
        with tracer.invoke(x[:1]):
            first = model.head.output.save()
        with tracer.invoke(x[1:]):
            second = model.head.output.save()
            getattr(model.head.output, field)[:] = 0  # a write through the narrowed view
            final = model.output.save()
        with tracer.invoke():
            cache = tracer.cache(modules=[model.head])
    assert type(first) is type(second) is type(ref)
    assert torch.allclose(getattr(first, field), getattr(ref, field)[:1])
    assert torch.equal(getattr(second, field), torch.zeros(3, 4))  # saved after its own write
    if kind == "model":
        assert list(first.keys()) == list(ref.keys()) == ["logits", "hidden"]
        assert torch.equal(first["hidden"], ref.hidden[:1]) and first.loss is None
    if kind == "base":
        assert list(first.keys()) == ["sample"] and first.mask is None
    assert torch.equal(final, torch.ones(3, 4))  # the invoke's rows, zeroed, + 1
    cached = cache["model.head"].output  # the empty invoke's cache: the whole batch, after the write
    assert type(cached) is type(ref)
    assert torch.allclose(getattr(cached, field)[:1], getattr(ref, field)[:1])
    assert torch.equal(getattr(cached, field)[1:], torch.zeros(3, 4))


def test_merging_an_invokes_rows_back_keeps_the_output_type():
    """`_merge` (an invoke assigns a whole output): a BaseOutput with a required None field stays one."""
    from runtime.batcher import _merge

    current = NoDefaults(sample=torch.zeros(4, 2), mask=None)
    mine = NoDefaults(sample=torch.ones(2, 2), mask=None)
    merged = _merge(current, mine, 1, 2, 4)
    assert type(merged) is NoDefaults and merged.mask is None and list(merged.keys()) == ["sample"]
    assert torch.equal(merged.sample, torch.tensor([[0.0, 0], [1, 1], [1, 1], [0, 0]]))


def test_one_row_groups_share_one_split_with_the_same_views_as_narrow():
    """Batcher.rows (set by the vLLM hub while it hands one value to every request's row): each
    one-row group gets the same view a narrow gives, from one split per value; a swapped or resized
    value is split again; other groups and values narrow as before."""
    from runtime.batcher import Batcher

    batcher = Batcher()
    batcher.total = 5
    x = torch.randn(5, 3)
    batcher.current, batcher.rows = x, [None, None, None]
    for i in range(5):
        view, narrow = batcher.narrow((i, 1)), x.narrow(0, i, 1)
        assert view.shape == narrow.shape and view.stride() == narrow.stride()
        assert view.data_ptr() == narrow.data_ptr() and view._base is x
    split = batcher.rows[2]
    batcher.narrow((3, 1))
    assert batcher.rows[2] is split, "split once per value"
    y = torch.randn(5, 3)
    batcher.current = y  # a swap
    assert batcher.narrow((1, 1)).data_ptr() == y[1:2].data_ptr()
    y.resize_(5, 2)  # the same tensor, resized in place
    assert batcher.narrow((1, 1)).shape == (1, 2) and batcher.narrow((1, 1)).data_ptr() == y[1:2].data_ptr()
    assert torch.equal(batcher.narrow((1, 2)), y[1:3])  # a two-row group: narrowed as before
    batcher.current = z = torch.randn(3, 2)  # not the batch's rows: whole, as a narrow would leave it
    assert batcher.narrow((1, 1)) is z
    batcher.rows = None
    assert batcher.narrow((1, 1)) is z
