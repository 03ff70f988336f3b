"""Gradients: `with loss.backward():` inside a trace and standalone,
checked against torch.autograd and plain tensor hooks."""
import pytest
import torch

import nnsight
from nnsight import LanguageModel, NNsight


def make_net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


@pytest.fixture
def net():
    return make_net()


@pytest.fixture
def x():
    torch.manual_seed(1)
    return torch.randn(4, 6)


def reference_grads(net, x, edit=None):
    """Gradients of (net(x)**2).sum() w.r.t. the outputs of layers 0 and 2, via tensor hooks.

    ``edit`` maps a layer index to a function applied to the gradient flowing through it."""
    seen = {}
    h0 = net[0](x)
    h2 = net[2](net[1](h0))
    out = net[4](net[3](h2))
    for i, h in ((0, h0), (2, h2)):
        def hook(g, i=i):
            seen[i] = g.detach().clone()
            return edit[i](g) if edit and i in edit else g
        h.register_hook(hook)
    net.zero_grad()
    (out ** 2).sum().backward()
    return seen, net[0].weight.grad.clone()


def test_grads_in_a_trace_equal_autograd(net, x):
    model = NNsight(net)
    with model.trace(x):
        h0 = model[0].output
        h2 = model[2].output
        loss = (model.output ** 2).sum()
        with loss.backward():
            g2 = h2.grad.save()   # reverse order of the forward pass
            g0 = h0.grad.save()
    seen, _ = reference_grads(net, x)
    assert torch.allclose(g2, seen[2]) and torch.allclose(g0, seen[0])
    # the same values through torch.autograd.grad
    a0 = net[0](x)
    a2 = net[2](net[1](a0))
    e2, e0 = torch.autograd.grad((net[4](net[3](a2)) ** 2).sum(), [a2, a0])
    assert torch.allclose(g2, e2) and torch.allclose(g0, e0)


def test_in_place_grad_edit_flows_into_the_backward_pass(net, x):
    model = NNsight(net)
    net.zero_grad()
    with model.trace(x):
        h2 = model[2].output
        loss = (model.output ** 2).sum()
        with loss.backward():
            h2.grad[:, :4] = 0
    got = net[0].weight.grad.clone()

    def zero(g):
        g = g.clone()
        g[:, :4] = 0
        return g

    _, expected = reference_grads(net, x, edit={2: zero})
    assert torch.allclose(got, expected)
    _, unedited = reference_grads(net, x)
    assert not torch.allclose(got, unedited)


def test_grad_assignment_replaces_the_gradient(net, x):
    model = NNsight(net)
    net.zero_grad()
    with model.trace(x):
        h2 = model[2].output
        loss = (model.output ** 2).sum()
        with loss.backward():
            h2.grad = h2.grad * 3
    got = net[0].weight.grad.clone()
    _, expected = reference_grads(net, x, edit={2: lambda g: g * 3})
    assert torch.allclose(got, expected)


def test_parameter_grad_inside_backward(net, x):
    model = NNsight(net)
    net.zero_grad()
    with model.trace(x):
        loss = (model.output ** 2).sum()
        with loss.backward():
            wgrad = model[4].weight.grad.save()
    assert torch.allclose(wgrad, net[4].weight.grad)


def test_wrong_gradient_order_names_the_tensor(net, x):
    model = NNsight(net)
    with pytest.raises(ValueError, match=r"Execution complete but `\d+\.grad(\.i0)?` was not provided"):
        with model.trace(x):
            h0 = model[0].output
            h2 = model[2].output
            loss = model.output.sum()
            with loss.backward():
                g0 = h0.grad.save()   # wrong: layer 2's gradient comes first
                g2 = h2.grad.save()


def test_output_inside_backward_is_refused(net, x):
    model = NNsight(net)
    with pytest.raises(ValueError, match=r"Cannot request `model\.2\.output\.i0` in a backwards tracer"):
        with model.trace(x):
            h0 = model[0].output
            loss = model.output.sum()
            with loss.backward():
                other = model[2].output


def test_input_inside_backward_is_refused(net, x):
    model = NNsight(net)
    with pytest.raises(ValueError, match=r"in a backwards tracer. You can only request `.grad`"):
        with model.trace(x):
            loss = model.output.sum()
            with loss.backward():
                other = model[2].input


def test_standalone_backward_tracer(net, x):
    h = net[0](x)
    out = net[4](net[3](net[2](net[1](h))))
    loss = out.sum()
    with loss.backward():
        gout = out.grad.save()
        gh = h.grad.save()
    assert torch.equal(gout, torch.ones_like(out))
    h2 = net[0](x)
    expected = torch.autograd.grad(net[4](net[3](net[2](net[1](h2)))).sum(), h2)[0]
    assert torch.allclose(gh, expected)


def test_standalone_backward_tracer_in_a_function(net, x):
    def grads():
        y = net(x)
        with (y ** 2).sum().backward():
            g = y.grad.save()
        return g, y

    g, y = grads()
    assert torch.allclose(g, 2 * y.detach())


def test_plain_backward_and_grad_unchanged(net, x):
    net.zero_grad()
    net(x).sum().backward()
    plain = net[0].weight.grad.clone()
    leaf = torch.ones(3, requires_grad=True)
    (leaf * 2).sum().backward()
    assert torch.equal(leaf.grad, torch.full((3,), 2.0))
    leaf.grad = None
    assert leaf.grad is None
    assert "grad" not in torch.Tensor.__dict__  # the property is only there while a tracer runs
    model = NNsight(net)
    net.zero_grad()
    with model.trace(x):
        model.output.sum().backward()   # not a with-statement: the real backward
    assert torch.allclose(net[0].weight.grad, plain)


def test_grad_is_real_outside_the_backward_body(net, x):
    model = NNsight(net)
    net.zero_grad()
    with model.trace(x):
        loss = model.output.sum()
        with loss.backward():
            pass
        w = nnsight.save(model[0].weight.grad.clone())
    assert torch.allclose(w, net[0].weight.grad)


def test_language_model_hidden_state_grad(gpt2_path):
    model = LanguageModel(gpt2_path, dispatch=True)
    with model.trace("Hello world"):
        hs = model.transformer.h[-1].output  # transformers 5 blocks return the tensor itself
        hs.requires_grad_(True)
        logits = model.lm_head.output
        loss = logits.sum()
        with loss.backward():
            grad = hs.grad.clone().save()
            hs.grad[:] = 0
            zeroed = hs.grad.save()
    ref = model._module
    tok = model.tokenizer("Hello world", return_tensors="pt")
    seen = {}

    def hook(m, a, o):
        o.register_hook(lambda g: seen.setdefault("g", g.detach().clone()))

    handle = ref.transformer.h[-1].register_forward_hook(hook)
    try:
        ref(**tok).logits.sum().backward()
    finally:
        handle.remove()
    assert grad.shape == seen["g"].shape
    assert torch.allclose(grad, seen["g"], atol=1e-6)
    assert torch.equal(zeroed, torch.zeros_like(zeroed))  # edited in place


def test_language_model_grad_edit_matches_hook_edit(gpt2_path):
    model = LanguageModel(gpt2_path, dispatch=True)
    ref = model._module
    ref.zero_grad()
    with model.trace("Hello world"):
        hs = model.transformer.h[1].output
        loss = model.lm_head.output.sum()
        with loss.backward():
            g = hs.grad.save()
            hs.grad[:] = 0
    got = ref.transformer.h[0].mlp.c_fc.weight.grad.clone()
    assert got.abs().sum() == 0   # nothing flows below layer 1 once its gradient is zero
    ref.zero_grad()
    tok = model.tokenizer("Hello world", return_tensors="pt")
    handle = ref.transformer.h[1].register_forward_hook(lambda m, a, o: o.register_hook(lambda gr: gr * 0) and None)
    try:
        ref(**tok).logits.sum().backward()
    finally:
        handle.remove()
    assert torch.equal(ref.transformer.h[0].mlp.c_fc.weight.grad, got)
    assert g.shape[-1] == 64


def test_backward_in_one_invoke_of_a_batched_trace(gpt2_path):
    """An invoke sees its rows of a batched output as a view; its `.grad` is that view's
    part of the batch's gradient (the loss was computed from the whole batch)."""
    model = LanguageModel(gpt2_path, dispatch=True)
    prompts = ["Hello world", "The Eiffel Tower is in"]
    with model.trace() as tracer:
        with tracer.invoke(prompts[0]):
            first = model.transformer.h[1].output.save()
        with tracer.invoke(prompts[1]):
            h = model.transformer.h[1].output
            loss = model.lm_head.output.sum()
            with loss.backward():
                g = h.grad.save()
    ref = model._module
    enc = model.tokenizer(prompts, return_tensors="pt", padding=True)
    seen = {}
    handle = ref.transformer.h[1].register_forward_hook(
        lambda m, a, o: o.register_hook(lambda gr: seen.setdefault("g", gr.detach().clone())) and None)
    try:
        ref(**enc).logits[1:].sum().backward()
    finally:
        handle.remove()
    assert g.shape == (1,) + seen["g"].shape[1:]
    assert torch.allclose(g, seen["g"][1:], atol=1e-6)
