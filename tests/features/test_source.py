"""Source tracing: operations inside a forward, checked against module hooks."""
import pytest
import torch

import nnsight
from nnsight import LanguageModel, NNsight


@pytest.fixture(scope="module")
def gpt2(gpt2_path):
    return LanguageModel(gpt2_path, dispatch=True)


def capture(module, submodule, run, edit=None):
    """Inputs/outputs of ``submodule`` with a plain forward hook while ``run()`` runs."""
    seen = {}

    def hook(m, args, out):
        seen["in"] = args[0].detach().clone()
        if edit is not None:
            out = edit(out)
        seen["out"] = out.detach().clone()
        return out

    handle = submodule.register_forward_hook(hook)
    try:
        with torch.no_grad():
            seen["result"] = run()
    finally:
        handle.remove()
    return seen


def test_print_lists_operations_with_names_and_lines(gpt2):
    text = str(gpt2.transformer.h[0].attn.source)
    lines = text.splitlines()
    assert lines[0].strip().startswith("* def forward(")
    for name in ("attention_interface_0", "self_c_proj_0", "self_resid_dropout_0", "self_c_attn_1"):
        row = next(line for line in lines if line.lstrip().startswith(name + " "))
        number, code = row.split("->", 1)[1].split(None, 1)
        assert number.isdigit() or number == "+"
    proj = next(line for line in lines if line.lstrip().startswith("self_c_proj_0 "))
    assert "self.c_proj(attn_output)" in proj
    names = gpt2.transformer.h[0].attn.source.names
    assert names.index("attention_interface_0") < names.index("self_c_proj_0")
    op = gpt2.transformer.h[0].attn.source.self_c_proj_0
    assert "-->" in str(op) and "self.c_proj(attn_output)" in str(op)
    assert op.path == "model.transformer.h.0.attn.self_c_proj_0"


def test_operation_values_equal_hook_captures(gpt2):
    with gpt2.trace("The Eiffel Tower is in"):
        attn = gpt2.transformer.h[0].attn.source.attention_interface_0.output.save()
        proj_in = gpt2.transformer.h[0].attn.source.self_c_proj_0.input.save()
        args, kwargs = gpt2.transformer.h[0].attn.source.self_c_proj_0.inputs
        n_args = nnsight.save(len(args))
        proj_out = gpt2.transformer.h[0].attn.source.self_c_proj_0.output.save()
        logits = gpt2.output.logits.save()
    ref = gpt2._module
    tok = gpt2.tokenizer("The Eiffel Tower is in", return_tensors="pt")
    seen = capture(ref, ref.transformer.h[0].attn.c_proj, lambda: ref(**tok).logits)
    assert n_args == 1
    assert torch.allclose(proj_in, seen["in"]) and torch.allclose(proj_out, seen["out"])
    assert torch.allclose(attn[0].reshape(proj_in.shape), seen["in"], atol=1e-6)
    assert torch.allclose(logits, seen["result"], atol=1e-5)


def test_operation_write_changes_downstream_like_a_hook(gpt2):
    with gpt2.trace("Hello world"):
        gpt2.transformer.h[1].attn.source.self_c_proj_0.output[:] = 0
        logits = gpt2.output.logits.save()
    ref = gpt2._module
    tok = gpt2.tokenizer("Hello world", return_tensors="pt")
    seen = capture(ref, ref.transformer.h[1].attn.c_proj, lambda: ref(**tok).logits, edit=lambda o: o * 0)
    assert torch.allclose(logits, seen["result"], atol=1e-5)
    with gpt2.trace("Hello world"):
        clean = gpt2.output.logits.save()
    assert not torch.allclose(clean, logits)


def test_operation_input_write(gpt2):
    with gpt2.trace("Hello world"):
        op = gpt2.transformer.h[0].mlp.source.self_c_proj_0
        op.input = op.input * 0
        out = gpt2.transformer.h[0].mlp.output.save()
    bias = gpt2._module.transformer.h[0].mlp.c_proj.bias
    assert torch.allclose(out, bias.expand_as(out), atol=1e-6)  # c_proj(0) = bias; dropout is off


def test_recursive_source_into_the_attention_function(gpt2_path):
    model = LanguageModel(gpt2_path, dispatch=True, attn_implementation="eager")
    with model.trace("Hello world"):
        eager = model.transformer.h[0].attn.source.attention_interface_0.source
        names = nnsight.save(eager.names)
        probs = eager.nn_functional_softmax_0.output.save()
        weights = model.transformer.h[0].attn.source.attention_interface_0.output[1].save()
    assert "nn_functional_softmax_0" in names and "torch_matmul_1" in names
    assert torch.allclose(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-5)
    assert torch.allclose(probs, weights)
    # editing inside the nested function flows out
    with model.trace("Hello world"):
        eager = model.transformer.h[0].attn.source.attention_interface_0.source
        eager.nn_functional_softmax_0.output[:] = 0
        out = model.transformer.h[0].attn.source.attention_interface_0.output[0].save()
    assert torch.equal(out, torch.zeros_like(out))


def test_source_survives_dispatch(gpt2_path):
    model = LanguageModel(gpt2_path)  # meta: real weights load on the first trace
    printed = str(model.transformer.h[0].mlp.source)
    assert "self_c_fc_0" in printed and model.device == torch.device("meta")
    with model.trace("Hello world"):
        fc = model.transformer.h[0].mlp.source.self_c_fc_0.output.save()
        act = model.transformer.h[0].mlp.source.self_act_0.output.save()
    assert model.device == torch.device("cpu")
    ref = model._module
    tok = model.tokenizer("Hello world", return_tensors="pt")
    seen = capture(ref, ref.transformer.h[0].mlp.c_fc, lambda: ref(**tok).logits)
    assert torch.allclose(fc, seen["out"])
    assert torch.allclose(act, ref.transformer.h[0].mlp.act(seen["out"]))


def test_source_on_a_user_module_and_nothing_stays_installed():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(4, 4)
            self.b = torch.nn.Linear(4, 4)

        def forward(self, x):
            h = torch.relu(self.a(x))
            return self.b(h) + super().__getattr__("a")(x)  # zero-arg super() keeps working

    torch.manual_seed(0)
    net = torch.nn.Sequential(Block(), torch.nn.Linear(4, 2))
    x = torch.randn(3, 4)
    model = NNsight(net)
    assert model[0].source.names == ("self_a_0", "torch_relu_0", "h_0", "self_b_0", "__getattr___0", "unknown_0")
    with model.trace(x):
        relu = model[0].source.torch_relu_0.output.save()
        model[0].source.self_b_0.output = model[0].source.self_b_0.output * 0
        out = model.output.save()
    assert torch.allclose(relu, torch.relu(net[0].a(x)))
    assert torch.allclose(out, net[1](net[0].a(x)))
    assert "forward" not in net[0].__dict__
    assert torch.allclose(net(x), net[1](net[0].b(torch.relu(net[0].a(x))) + net[0].a(x)))


def test_several_wrappers_keep_their_own_source(gpt2_path):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(gpt2_path).eval()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gpt2_path)
    m1 = LanguageModel(hf, tokenizer=tok)
    m2 = LanguageModel(hf, tokenizer=tok)
    with m1.trace("Hello"):
        a = m1.transformer.h[0].attn.source.self_c_proj_0.output.save()
    with m2.trace("Hello"):
        b = m2.transformer.h[0].attn.output[0].save()
    with m1.trace("Hello"):
        c = m1.transformer.h[0].attn.source.self_c_proj_0.output.save()
    assert torch.allclose(a, c) and torch.allclose(a, b)


def test_operation_values_outside_a_trace_error(gpt2):
    with pytest.raises(ValueError, match="outside of a trace"):
        gpt2.transformer.h[0].attn.source.self_c_proj_0.output
    with pytest.raises(ValueError, match="within a trace"):
        gpt2.transformer.h[0].attn.source.attention_interface_0.source
    with pytest.raises(AttributeError, match="no operation"):
        gpt2.transformer.h[0].attn.source.not_an_op_0


def test_recursive_source_on_a_module_call_is_refused(gpt2):
    with pytest.raises(ValueError, match="Don't call .source on a module"):
        with gpt2.trace("Hello"):
            gpt2.transformer.h[0].attn.source.self_c_proj_0.source
