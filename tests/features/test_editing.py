"""Model editing: model.edit() returns an edited copy, edit(inplace=True) edits the
model itself, clear_edits() removes edits — checked against forward hooks."""
import pytest
import torch

from nnsight import NNsight

from feature_utils import hf_generate, make_mlp


def hooked(net, index, fn, x):
    handle = net[index].register_forward_hook(lambda m, a, o: fn(o))
    try:
        with torch.no_grad():
            return net(x)
    finally:
        handle.remove()


@pytest.fixture
def net():
    return make_mlp()


@pytest.fixture
def x():
    torch.manual_seed(3)
    return torch.randn(2, 8)


def test_edit_returns_an_edited_copy_and_leaves_the_original(net, x):
    model = NNsight(net)
    with model.edit() as edited:
        model[2].output[:] = 0
    assert edited is not model and type(edited) is type(model)
    assert edited._module is model._module  # same weights, no copy of the network
    with model.trace(x):
        plain = model.output.save()
    with edited.trace(x):
        h2 = edited[2].output.save()
        out = edited.output.save()
    assert torch.allclose(plain, net(x))
    assert torch.all(h2 == 0)
    assert torch.allclose(out, hooked(net, 2, lambda o: o.zero_(), x))


def test_inplace_edit_and_clear_edits(net, x):
    model = NNsight(net)
    with model.edit(inplace=True):
        model[0].output = model[0].output * 2
    try:
        with model.trace(x):
            out = model.output.save()
        assert torch.allclose(out, hooked(net, 0, lambda o: o * 2, x))
        with model.trace(x):  # every later trace
            again = model.output.save()
        assert torch.allclose(again, out)
    finally:
        model.clear_edits()
    with model.trace(x):
        clean = model.output.save()
    assert torch.allclose(clean, net(x))


def test_edits_stack_on_copies_and_clear_separately(net, x):
    model = NNsight(net)
    with model.edit() as once:
        model[0].output = model[0].output + 1
    with once.edit() as twice:
        model[4].output = model[4].output * 0.5
    with twice.trace(x):
        out2 = twice.output.save()
    with once.trace(x):
        out1 = once.output.save()

    h = [net[0].register_forward_hook(lambda m, a, o: o + 1),
         net[4].register_forward_hook(lambda m, a, o: o * 0.5)]
    try:
        expected2 = net(x)
    finally:
        for handle in h:
            handle.remove()
    assert torch.allclose(out2, expected2)
    assert torch.allclose(out1, hooked(net, 0, lambda o: o + 1, x))
    twice.clear_edits()
    with twice.trace(x):
        cleared = twice.output.save()
    with once.trace(x):
        still = once.output.save()
    assert torch.allclose(cleared, net(x)) and torch.allclose(still, out1)


def test_edit_applies_to_every_invoke_and_user_interventions_see_it(net):
    model = NNsight(net)
    with model.edit() as edited:
        model[0].output[:] = 1
    a, b = torch.randn(1, 8), torch.randn(2, 8)
    with edited.trace() as tracer:
        with tracer.invoke(a):
            seen = edited[0].output.save()
            out_a = edited.output.save()
        with tracer.invoke(b):
            edited[2].output = edited[2].output * 3
            out_b = edited.output.save()
    ones = lambda n: torch.ones(n, 8)
    assert torch.all(seen == 1)
    assert torch.allclose(out_a, net[1:](ones(1)))
    assert torch.allclose(out_b, net[3:](net[1:3](ones(2)) * 3))


def test_edit_body_uses_its_own_variables(net, x):
    model = NNsight(net)
    scale = 5.0
    with model.edit() as edited:
        model[6].output = model[6].output * scale
    scale = 100.0  # the edit kept the value it was made with
    with edited.trace(x):
        out = edited.output.save()
    assert torch.allclose(out, hooked(net, 6, lambda o: o * 5.0, x))


def test_edit_applies_to_generation(gpt2):
    with gpt2.edit() as edited:
        logits = gpt2.lm_head.output
        logits[:, -1, :] = -1e4
        logits[:, -1, 11] = 1e4
    with edited.generate("Hello world", max_new_tokens=3) as tracer:
        out = tracer.result.save()
    clean = hf_generate(gpt2, ["Hello world"], max_new_tokens=3)
    n = clean.shape[1] - 3
    assert int(out[0, n]) == 11  # the edit runs at the first step (iteration 0)
    with gpt2.generate("Hello world", max_new_tokens=3) as tracer:
        original = tracer.result.save()
    assert torch.equal(original, clean)


def test_a_failing_edit_surfaces_in_the_trace(net, x):
    model = NNsight(net)
    with model.edit() as edited:
        model[0].output[100] = 0
    with pytest.raises(IndexError):
        with edited.trace(x):
            out = edited.output.save()
    with model.trace(x):  # the original is unaffected
        out = model.output.save()
    assert torch.allclose(out, net(x))
