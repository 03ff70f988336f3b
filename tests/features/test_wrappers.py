"""Several wrappers of one model, freeing wrappers (no leaks), and custom batching."""
import gc
import types
import weakref

import pytest
import torch
from greenlet import greenlet

import nnsight
from nnsight import LanguageModel, NNsight
from nnsight.batching import Batchable
from runtime import claims
from runtime.interleaver import Interleaver
from runtime.mediator import Mediator, _Worker


def make_net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()


# Objects alive before the test began (another test file's models, kept by its fixtures): not this
# test's to free. Held, so that their ids stay theirs while the test runs.
_PREEXISTING: list = []


@pytest.fixture(autouse=True)
def _count_only_this_tests_objects():
    _PREEXISTING[:] = [o for objects in census().values() for o in objects]
    yield
    _PREEXISTING.clear()


def census():
    """Live nnsight runtime objects made since the test began, after a full collection, by kind
    (one pass over the heap)."""
    gc.collect()
    found = {"wrapper": [], "interleaver": [], "mediator": [], "worker": [], "frame": [], "greenlet": []}
    before = {id(o) for o in _PREEXISTING}
    for o in gc.get_objects():
        if id(o) in before:
            continue
        t = type(o)  # not isinstance: some lazy torch objects warn on __class__ access
        if issubclass(t, NNsight):
            found["wrapper"].append(o)
        elif issubclass(t, Interleaver):
            found["interleaver"].append(o)
        elif issubclass(t, Mediator):
            found["mediator"].append(o)
        elif issubclass(t, _Worker):
            found["worker"].append(o)
        elif t is types.FrameType and claims.compiled_unit_of(o) is not None:
            found["frame"].append(o)
        elif issubclass(t, greenlet) and o.parent is not None:
            found["greenlet"].append(o)
    return {k: v for k, v in found.items() if v}


def live(kind):
    return census().get(kind, [])


def live_unit_frames():
    return live("frame")


# ------------------------------------------------------------ several wrappers

def test_several_wrappers_of_one_module_work_independently():
    net = make_net()
    x = torch.randn(3, 4)
    m1, m2 = NNsight(net), NNsight(net, rename={"0": "first"})
    with m1.trace(x):
        m1[0].output[:] = 0
        a = m1.output.save()
    with m2.trace(x):
        b = m2.first.output.save()
        c = m2.output.save()
    with m1.trace(x):
        d = m1.output.save()
    assert torch.allclose(a, net[2](torch.zeros(3, 8)))
    assert torch.allclose(b, net[0](x)) and torch.allclose(c, net(x)) and torch.allclose(d, net(x))
    assert "first" not in m1.__dict__["_aliases"]
    m3 = NNsight(net)
    print(m3[0].source)     # a rewritten forward only for m3's executions
    with m1.trace(x):
        e = m1.output.save()
    with m3.trace(x):
        lin = m3[0].source.F_linear_0.output.save()
        f = m3.output.save()
    assert torch.allclose(e, net(x)) and torch.allclose(f, net(x)) and torch.allclose(lin, net[0](x))
    assert not any("forward" in m.__dict__ for m in net.modules())


def test_wrappers_in_a_loop_do_not_accumulate():
    net = make_net()
    x = torch.randn(2, 4)
    for _ in range(20):
        model = NNsight(net)
        with model.trace(x):
            out = model.output.save()
    del model
    assert census() == {}
    assert not any("forward" in m.__dict__ for m in net.modules())


# ------------------------------------------------------------------ leaks

def test_nothing_stays_alive_after_a_trace_and_del_model(gpt2_path):
    model = LanguageModel(gpt2_path, dispatch=True)
    refs = [weakref.ref(model), weakref.ref(model._interleaver), weakref.ref(model.transformer.h[0])]
    with model.trace() as tracer:
        with tracer.invoke("Hello"):
            h = model.transformer.h[0].output.save()
        with tracer.invoke("World"):
            g = model.transformer.h[1].output
            loss = g.sum()
            with loss.backward():
                grad = g.grad.save()
        with tracer.invoke():
            attn = model.transformer.h[0].attn.source.self_c_proj_0.output.save()
    assert census().keys() <= {"wrapper", "interleaver"}  # no mediator, worker greenlet or frame
    del tracer
    del model
    gc.collect()
    assert [r() for r in refs] == [None, None, None]
    assert census() == {}
    assert h.shape[-1] == grad.shape[-1] == attn.shape[-1] == 64


def test_nothing_stays_alive_after_a_failed_trace():
    model = NNsight(make_net())
    ref = weakref.ref(model)
    try:
        with model.trace(torch.randn(1, 4)):
            late = model[2].output
            early = model[0].output   # out of order: the trace fails
    except nnsight.OutOfOrderError:
        pass
    assert census().keys() <= {"wrapper", "interleaver"}  # no mediator, worker greenlet or frame
    del model
    gc.collect()
    assert ref() is None and census() == {}


def test_scan_and_standalone_backward_leave_nothing_behind():
    net = make_net()
    model = NNsight(net)
    with model.scan(torch.randn(2, 4)):
        shape = nnsight.save(model[0].output.shape)
    y = net(torch.randn(2, 4))
    with y.sum().backward():
        gy = y.grad.save()
    assert shape == (2, 8) and torch.equal(gy, torch.ones_like(y))
    assert census().keys() <= {"wrapper", "interleaver"}  # no mediator, worker greenlet or frame
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None and census() == {}


def test_only_the_main_greenlet_is_left():
    model = NNsight(make_net())
    for _ in range(5):
        with model.trace() as tracer:
            with tracer.invoke(torch.randn(1, 4)):
                a = model[0].output.save()
            with tracer.invoke(torch.randn(1, 4)):
                b = model[2].output.save()
    assert census().keys() <= {"wrapper", "interleaver"}


# ---------------------------------------------------------------- batching

class PointCloud(NNsight):
    """A user model class whose invokes take lists of 4-d points (any number of them)."""

    prepared = 0
    batched = 0

    def _prepare_input(self, points, scale=1.0):
        self.prepared += 1
        rows = torch.as_tensor(points, dtype=torch.float32).reshape(-1, 4) * scale
        return (rows,), {}, rows.shape[0]

    def _batch(self, batched, rows):
        self.batched += 1
        (previous,), kwargs = batched
        return (torch.cat([previous, rows]),), kwargs


def test_user_subclass_batching_hooks():
    net = make_net()
    model = PointCloud(net)
    p1 = [[1, 2, 3, 4]]
    p2 = [[0, 1, 0, 1], [2, 2, 2, 2], [1, 0, 0, 0]]
    with model.trace() as tracer:
        with tracer.invoke(p1, scale=2.0):
            out1 = model.output.save()
        with tracer.invoke(p2):
            model[0].output[:] = 0
            out2 = model.output.save()
        with tracer.invoke():
            everything = model.output.save()
    assert model.prepared == 2 and model.batched == 1
    assert out1.shape == (1, 2) and out2.shape == (3, 2) and everything.shape == (4, 2)
    assert torch.allclose(out1, net(torch.tensor(p1, dtype=torch.float32) * 2))
    assert torch.allclose(out2, net[2](torch.zeros(3, 8)).expand(3, 2))
    assert torch.allclose(everything, torch.cat([out1, out2]))
    with model.trace(p2):   # an input given to the trace is one invoke through the same hook
        single = model.output.save()
    assert torch.allclose(single, net(torch.tensor(p2, dtype=torch.float32)))


def test_batchable_defaults_and_missing_batch():
    class OneAtATime(NNsight):
        _batch = Batchable._batch

        def _prepare_input(self, *inputs, **kwargs):
            return Batchable._prepare_input(self, *inputs, **kwargs)

    net = make_net()
    model = OneAtATime(net)
    x = torch.randn(1, 4)
    assert isinstance(model, Batchable)
    assert Batchable._prepare_input(model) == ((), {}, 0)
    with model.trace() as tracer:   # one input invoke plus empty invokes needs no _batch
        with tracer.invoke(x):
            a = model.output.save()
        with tracer.invoke():
            b = model.output.save()
    assert torch.equal(a, b)
    with pytest.raises(NotImplementedError, match="implement `_batch`"):
        with model.trace() as tracer:
            with tracer.invoke(x):
                a = model.output.save()
            with tracer.invoke(x):
                b = model.output.save()


def test_model_is_freed_by_reference_counting_alone():
    """No reference cycle holds a wrapper: it goes as soon as its last reference does."""
    gc.collect()
    gc.disable()
    try:
        net = make_net()
        model = NNsight(net)
        x = torch.randn(2, 4)
        with model.trace() as tracer:
            with tracer.invoke(x):
                h = model[0].output
                lin = model[2].source.F_linear_0.output.save()
                with model.output.sum().backward():
                    g = h.grad.save()
            with tracer.invoke():
                out = model.output.save()
        refs = [weakref.ref(o) for o in (model, model._interleaver, model[0], model[2].source, tracer)]
        del model, tracer
        assert [r() for r in refs] == [None] * len(refs)
    finally:
        gc.enable()
    assert g.shape == (2, 8) and torch.allclose(lin, out) and torch.allclose(out, net(x))
