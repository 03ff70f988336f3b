""".source as nnsight 0.8 has it: assignments are operations, `source.names`, `op.skip(value)`,
both numberings of a call, and drilling into the same function from several invokes.

Numbers are checked against plain torch / plain Hugging Face runs.
"""
import transformers  # noqa: F401  (import before nnsight mounts `.save`)
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import nnsight
from nnsight import LanguageModel, NNsight
from nnsight.intervention.source import SourceNotAvailable

torch.set_num_threads(1)

# Same token count: padded batches are another matter (left padding and position_ids).
PROMPTS = ["The capital of France is", "The capital of Japan is"]


def helper(x, k):
    y = x * k
    return torch.relu(y) + 1


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
        self.fc2 = torch.nn.Linear(4, 4)
        self.state = {}

    def forward(self, x):
        h = self.fc(x)
        h2: torch.Tensor = h * 2
        a, b = h.chunk(2, dim=-1)
        h += 1
        self.state["k"] = 3
        self.last = h
        g = helper(h2, 3)
        for i in range(2):
            g = g + i
        out = self.fc2(g)
        return out


def net_reference(net, x, h2=None):
    """Net.forward in plain torch, with `h2` replaced when given."""
    h = net.fc(x)
    h2 = h * 2 if h2 is None else h2
    return net.fc2(torch.relu(h2 * 3) + 1 + 0 + 1)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return Net()


def test_assignments_are_operations_named_as_in_08(net):
    source = NNsight(net).source
    # The names nnsight 0.8.1 gives this forward (tuple targets and `+=` are not operations).
    assert source.names == ("self_fc_0", "h_0", "h2_0", "h_chunk_0", "self_state_0", "self_last_0",
                            "helper_0", "g_0", "range_0", "g_1", "self_fc2_0", "out_0")
    assert [op.name for op in source] == list(source.names)  # iterating gives the operations
    assert source.h2_0.is_assignment and not source.self_fc_0.is_assignment
    assert "h2_0" in source and "nope_0" not in source
    printed = str(source)
    assert "h2_0" in printed and "self_last_0" in printed


def test_assignment_values_and_replacing_them(net):
    model = NNsight(net)
    x = torch.randn(2, 4)
    with model.trace(x):
        args, kwargs = model.source.h2_0.inputs  # the input comes first, as for a call
        assigned = nnsight.save(args[0])
        h2 = model.source.h2_0.output.save()
        k = model.source.self_state_0.output.save()
        last = model.source.self_last_0.output.save()
        out = model.output.save()
    h = net.fc(x)
    assert torch.allclose(h2, h * 2) and torch.allclose(assigned, h * 2)
    assert k == 3 and torch.allclose(last, h + 1)
    assert torch.allclose(out, net_reference(net, x))
    with model.trace(x):
        model.source.h2_0.output = torch.zeros(2, 4)  # what the forward assigns
        edited = model.output.save()
    assert torch.allclose(edited, net_reference(net, x, h2=torch.zeros(2, 4)))
    assert torch.allclose(net(x), net_reference(net, x))  # nothing stays installed


def test_skip_an_operation(net):
    model = NNsight(net)
    x = torch.randn(2, 4)
    with model.trace(x):
        model.source.self_fc_0.skip(torch.ones(2, 4))  # self.fc does not run
        out = model.output.save()
    assert torch.allclose(out, net.fc2(torch.relu(torch.ones(2, 4) * 2 * 3) + 1 + 0 + 1))
    with model.trace(x):
        model.source.h2_0.skip(torch.full((2, 4), -1.0))  # an assignment assigns the value
        out = model.output.save()
    assert torch.allclose(out, net_reference(net, x, h2=torch.full((2, 4), -1.0)))


# ------------------------------------------------------------------ Hugging Face models


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def lm(request):
    path = request.getfixturevalue(f"{request.param}_path")
    hf = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(path)
    model = LanguageModel(path, dispatch=True, attn_implementation="eager")
    attn = "transformer.h.0.attn" if request.param == "gpt2" else "model.layers.0.self_attn"
    mlp = "transformer.h.0.mlp" if request.param == "gpt2" else "model.layers.0.mlp"
    return request.param, hf, tok, model, attn, mlp


def _envoy(model, dotted):
    for part in dotted.split("."):
        model = model[int(part)] if part.isdigit() else getattr(model, part)
    return model


def test_a_call_answers_to_both_numberings(lm):
    _, hf, tok, model, attn, _ = lm
    source = _envoy(model, attn).source
    call = source.attention_interface_0  # calls counted among calls
    # nnsight 0.8 counts the `attention_interface = ...` assignment too: its name of the call
    old_name = "attention_interface_1"
    assert old_name not in source.names and source[old_name] is call
    assert getattr(source, old_name) is call
    assignment = next(op for op in source if op.is_assignment and op.name.startswith("attention_interface_"))
    assert assignment.line < call.line and assignment.name != old_name
    ids = tok(PROMPTS[0], return_tensors="pt")
    with torch.no_grad():
        expected = hf(**ids, output_attentions=True).attentions[0]
    with model.trace(PROMPTS[0]):
        function = assignment.output.save()  # the assignment runs first
        weights = _envoy(model, attn).source[old_name].output[1].save()
    assert torch.allclose(weights, expected, atol=1e-5)
    assert callable(function)
    with pytest.raises(SourceNotAvailable, match="is an assignment"):
        with model.trace(PROMPTS[0]):
            assignment.source


def test_skip_a_call_in_every_invoke(lm):
    _, hf, tok, model, _, mlp = lm
    act = "self_act_fn_0" if "layers" in mlp else "self_act_0"
    act_module = "act_fn" if "layers" in mlp else "act"
    handle = hf.get_submodule(f"{mlp}.{act_module}").register_forward_hook(lambda m, i, o: torch.zeros_like(o))
    try:
        with torch.no_grad():
            expected = [hf(**tok(p, return_tensors="pt")).logits for p in PROMPTS]
    finally:
        handle.remove()
    with model.trace() as tracer:
        with tracer.invoke(PROMPTS[0]):
            op = getattr(_envoy(model, mlp).source, act)
            op.skip(torch.zeros_like(op.input))
            first = model.lm_head.output.save()
        with tracer.invoke(PROMPTS[1]):
            op = getattr(_envoy(model, mlp).source, act)
            op.skip(torch.zeros_like(op.input))
            logits = model.lm_head.output.save()
    assert torch.allclose(first, expected[0], atol=1e-5)
    assert torch.allclose(logits, expected[1], atol=1e-5)


def test_drilling_into_the_same_function_from_two_invokes(lm):
    _, hf, tok, model, attn, _ = lm
    with torch.no_grad():
        expected = [hf(**tok(p, return_tensors="pt"), output_attentions=True).attentions[0] for p in PROMPTS]
    with model.trace() as tracer:
        with tracer.invoke(PROMPTS[0]):
            first = _envoy(model, attn).source.attention_interface_0.source.nn_functional_softmax_0.output.save()
        with tracer.invoke(PROMPTS[1]):
            inner = _envoy(model, attn).source.attention_interface_0.source
            second = inner.nn_functional_softmax_0.output.save()
            names = nnsight.save(inner.names)
    assert torch.allclose(first, expected[0], atol=1e-5)
    assert torch.allclose(second, expected[1], atol=1e-5)
    assert "attn_weights_0" in names  # assignments inside the drilled-into function too
    # A write in one invoke stays in its own rows.
    with model.trace() as tracer:
        with tracer.invoke(PROMPTS[0]):
            _envoy(model, attn).source.attention_interface_0.source.nn_functional_softmax_0.output[:] = 0
            zeroed = _envoy(model, attn).source.attention_interface_0.output[0].save()
        with tracer.invoke(PROMPTS[1]):
            kept = _envoy(model, attn).source.attention_interface_0.source.nn_functional_softmax_0.output.save()
    assert torch.equal(zeroed, torch.zeros_like(zeroed))
    assert torch.allclose(kept, expected[1], atol=1e-5)
