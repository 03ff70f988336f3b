"""The spine on a plain MLP: reads, writes, invokes and errors, checked against torch hooks."""
import pytest
import torch

import nnsight
from nnsight import NNsight, OutOfOrderError


def make_net(seed=0, width=8, depth=4):
    torch.manual_seed(seed)
    layers = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers).eval()


def hook_outputs(net, x, edit=None):
    """Outputs of every child captured with plain forward hooks; ``edit`` maps index -> fn."""
    seen = {}
    handles = []
    for i, m in enumerate(net):
        def hook(mod, args, out, i=i):
            if edit and i in edit:
                out = edit[i](out)
            seen[i] = out.detach().clone()
            return out
        handles.append(m.register_forward_hook(hook))
    try:
        final = net(x)
    finally:
        for h in handles:
            h.remove()
    return seen, final


class WithUnused(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = make_net()
        self.unused = torch.nn.Linear(8, 8)

    def forward(self, x):
        return self.body(x)


@pytest.fixture
def net():
    return make_net()


@pytest.fixture
def x():
    torch.manual_seed(1)
    return torch.randn(3, 8)


def test_saved_output_equals_hook_capture(net, x):
    model = NNsight(net)
    with model.trace(x):
        h0 = model[0].output.save()
        h4 = model[4].output.save()
        out = model.output.save()
    seen, final = hook_outputs(net, x)
    assert torch.equal(h0, seen[0])
    assert torch.equal(h4, seen[4])
    assert torch.equal(out, final)


def test_a_body_that_does_nothing_runs_the_model_unpatched(net, x):
    """`pass`: no intervention, so no module's forward is patched while the model runs, and the
    result is the plain forward's; a body that reads a module still gets it patched."""
    model = NNsight(net)
    patched = []
    net[2].register_forward_pre_hook(lambda module, args: patched.append("forward" in module.__dict__))
    with model.trace(x) as tracer:
        pass
    assert torch.equal(tracer.result, net(x)) and patched == [False, False]
    with model.trace(x):
        h2 = model[2].output.save()
    assert patched[-1] is True and torch.equal(h2, net[2](net[1](net[0](x))))


def test_nnsight_save_function_and_unsaved_not_written_back(net, x):
    model = NNsight(net)
    with model.trace(x):
        kept = nnsight.save(model[2].output)
        dropped = model[2].output * 2
    assert torch.equal(kept, hook_outputs(net, x)[0][2])
    with pytest.raises(NameError, match=r"`dropped` was set inside the trace .* not saved.*\.save\(\)"):
        dropped + 1  # not written back: any use says to save it


def test_in_place_write_matches_hook_edit(net, x):
    model = NNsight(net)
    with model.trace(x):
        model[1].output[:, :4] = 0
        out = model.output.save()

    def zero(o):
        o = o.clone()
        o[:, :4] = 0
        return o

    _, expected = hook_outputs(net, x, edit={1: zero})
    assert torch.equal(out, expected)
    assert not torch.equal(out, net(x))


def test_whole_replacement_matches_hook_edit(net, x):
    model = NNsight(net)
    with model.trace(x):
        model[3].output = model[3].output * 3 + 1
        out = model.output.save()
    _, expected = hook_outputs(net, x, edit={3: lambda o: o * 3 + 1})
    assert torch.equal(out, expected)


def test_input_read_and_write(net, x):
    model = NNsight(net)
    with model.trace(x):
        inp = model[2].input.save()
        args, kwargs = model[2].inputs
        n_args = nnsight.save(len(args))
        model[4].input = model[4].input * 0
        out = model.output.save()
    seen, _ = hook_outputs(net, x)
    assert torch.equal(inp, seen[1])
    assert n_args == 1
    tail = torch.nn.Sequential(*list(net)[4:])
    assert torch.equal(out, tail(torch.zeros_like(seen[3])))


def test_two_invokes_see_their_rows_and_empty_invoke_sees_all(net):
    model = NNsight(net)
    a, b = torch.randn(1, 8), torch.randn(2, 8)
    with model.trace() as tracer:
        with tracer.invoke(a):
            out_a = model[6].output.save()
        with tracer.invoke(b):
            out_b = model[6].output.save()
        with tracer.invoke():
            out_all = model[6].output.save()
    full, _ = hook_outputs(net, torch.cat([a, b]))
    assert out_a.shape == (1, 8) and out_b.shape == (2, 8) and out_all.shape == (3, 8)
    assert torch.allclose(out_a, full[6][:1])
    assert torch.allclose(out_b, full[6][1:])
    assert torch.allclose(out_all, full[6])


def test_write_in_one_invoke_only_touches_its_rows(net):
    model = NNsight(net)
    a, b = torch.randn(1, 8), torch.randn(1, 8)
    with model.trace() as tracer:
        with tracer.invoke(a):
            model[0].output[:] = 0
            out_a = model.output.save()
        with tracer.invoke(b):
            out_b = model.output.save()
    tail = torch.nn.Sequential(*list(net)[1:])
    assert torch.allclose(out_a, tail(torch.zeros(1, 8)))
    assert torch.allclose(out_b, net(b))


def test_cross_invoke_variable_sharing(net):
    model = NNsight(net)
    a, b = torch.randn(1, 8), torch.randn(1, 8)
    with model.trace() as tracer:
        with tracer.invoke(a):
            clean = model[0].output
        with tracer.invoke(b):
            model[2].output = model[2].output + clean.sum()
            patched = model.output.save()
    seen_a, _ = hook_outputs(net, a)
    _, expected = hook_outputs(net, b, edit={2: lambda o: o + seen_a[0].sum()})
    assert torch.allclose(patched, expected)


def test_out_of_order_raises_with_requester_in_message(net, x):
    model = NNsight(net)
    with pytest.raises(OutOfOrderError, match=r"model\.0\.output\.i0"):
        with model.trace(x):
            late = model[4].output.save()
            early = model[0].output.save()


def test_never_reached_envoy_raises_naming_it(x):
    model = NNsight(WithUnused())
    with pytest.raises(ValueError, match=r"model\.unused\.output\.i0"):
        with model.trace(x):
            out = model.unused.output.save()


def test_save_outside_trace_errors():
    with pytest.raises(RuntimeError, match="outside of a trace"):
        nnsight.save(1)
    with pytest.raises(RuntimeError, match="outside of a trace"):
        torch.ones(1).save()


def test_tracer_result(net, x):
    model = NNsight(net)
    with model.trace(x) as tracer:
        result = tracer.result.save()
    assert torch.equal(result, net(x))


def test_ad_hoc_module_call_bypasses_interleaving(net, x):
    model = NNsight(net)
    with model.trace(x):
        h = model[5].output
        decoded = model[6](h).save()       # not a hooked call: no provider fired
        after = model[6].output.save()     # the real call still provides its output
    seen, _ = hook_outputs(net, x)
    assert torch.allclose(decoded, seen[6])
    assert torch.allclose(after, seen[6])


def test_hook_true_call_is_visible_to_other_invokes(x):
    net = WithUnused()
    model = NNsight(net)
    with model.trace() as tracer:
        with tracer.invoke(x):
            h = model.body[7].output
            model.unused(h, hook=True)
        with tracer.invoke():
            probe_out = model.unused.output.save()
    assert torch.allclose(probe_out, net.unused(net(x)))


def test_trace_inside_function_writes_back_locals(net, x):
    model = NNsight(net)

    def run():
        with model.trace(x):
            h = model[0].output.save()
        return h

    assert torch.equal(run(), hook_outputs(net, x)[0][0])


def test_trace_in_loop_is_lowered_once(net):
    from nnsight.tracing import compile as compile_mod

    model = NNsight(net)
    compile_mod.clear_cache()
    outs = []
    for i in range(3):
        with model.trace(torch.full((1, 8), float(i))):
            o = model.output.save()
        outs.append(o)
    assert len(compile_mod._cache) == 1
    assert torch.equal(outs[2], net(torch.full((1, 8), 2.0)))


def test_exception_type_is_preserved_and_catchable(net, x):
    model = NNsight(net)
    with pytest.raises(IndexError):
        with model.trace(x):
            h = model[0].output[0][100]


def test_multiple_wrappers_of_one_module_work_independently(net, x):
    m1, m2 = NNsight(net), NNsight(net)
    with m1.trace(x):
        a = m1[0].output.save()
    with m2.trace(x):
        b = m2[0].output.save()
    with m1.trace(x):
        c = m1[0].output.save()
    assert torch.equal(a, b) and torch.equal(a, c)
    assert "forward" not in net[0].__dict__  # nothing left installed on the model


class Reader:
    """A user object that reaches the model through an attribute."""

    def __init__(self, model):
        self.model = model

    def read(self):
        return self.model[4].output


def test_envoys_reached_through_containers_and_objects_are_hooked(net, x):
    model = NNsight(net)
    layers = [model[0], model[2]]
    reader = Reader(model)
    with model.trace(x):
        outs = list().save()
        for layer in layers:
            outs.append(layer.output)
        via_object = reader.read().save()
    seen, _ = hook_outputs(net, x)
    assert torch.equal(outs[0], seen[0]) and torch.equal(outs[1], seen[2])
    assert torch.equal(via_object, seen[4])
