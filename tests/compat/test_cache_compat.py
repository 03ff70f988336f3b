"""tracer.cache as nnsight 0.8 has it: entries reachable by `rename=` aliases, `non_blocking`,
and modules that return None several times keep one entry per call.

Numbers are checked against plain Hugging Face hidden states and plain torch.
"""
import transformers  # noqa: F401  (import before nnsight mounts `.save`)
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from nnsight import LanguageModel, NNsight

torch.set_num_threads(1)

PROMPT = "The Eiffel Tower is in the city of"
LAYERS = {"gpt2": "transformer.h", "llama": "model.layers"}


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def lm(request):
    path = request.getfixturevalue(f"{request.param}_path")
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    model = LanguageModel(path, dispatch=True, rename={LAYERS[request.param]: "blocks"})
    with torch.no_grad():
        hidden = hf(**tok(PROMPT, return_tensors="pt"), output_hidden_states=True).hidden_states
    return request.param, model, hidden


def _layer_output(value):
    return value[0] if isinstance(value, tuple) else value


def test_cache_entries_are_reachable_by_alias_and_by_path(lm):
    kind, model, hidden = lm
    with model.trace(PROMPT) as tracer:
        cache = tracer.cache(modules=[model.blocks[0], "model.blocks.1"])  # an envoy and a string, both aliases
    real = f"model.{LAYERS[kind]}"
    assert sorted(cache.keys()) == [f"{real}.0", f"{real}.1"]
    first = _layer_output(cache.blocks[0].output)  # short form, through the alias
    assert torch.allclose(first, hidden[1], atol=1e-5)
    assert cache.model.blocks[0].output is cache.blocks[0].output
    assert cache["model.blocks.0"].output is cache[f"{real}.0"].output
    assert cache["blocks.1"].output is cache[f"{real}.1"].output
    if kind == "gpt2":  # the original names keep working next to the alias
        assert cache.model.transformer.h[1].output is cache.blocks[1].output
    else:
        assert cache.model.model.layers[1].output is cache.blocks[1].output
    assert "model.blocks.0" in cache and "model.blocks.3" not in cache
    with pytest.raises(AttributeError, match="Nothing under"):
        cache.blocks[3]  # not cached (and gpt2's block 3 exists, llama's does not)


def test_cache_non_blocking_and_dtype(lm):
    kind, model, hidden = lm
    with model.trace(PROMPT) as tracer:
        cache = tracer.cache(modules=[model.blocks[0]], device="cpu", dtype=torch.float64, non_blocking=True)
    first = _layer_output(cache.blocks[0].output)
    assert first.dtype == torch.float64 and not first.requires_grad
    assert torch.allclose(first, hidden[1].double(), atol=1e-5)


class Side(torch.nn.Module):
    def forward(self, x):
        return None


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.side = Side()
        self.fc = torch.nn.Linear(3, 3)

    def forward(self, x):
        for k in range(3):
            self.side(x * k)
        return self.fc(x)


@pytest.mark.parametrize("include_inputs", [False, True])
def test_a_module_returning_none_several_times_keeps_every_call(include_inputs):
    torch.manual_seed(0)
    net = Net()
    model = NNsight(net)
    x = torch.randn(2, 3)
    with model.trace(x) as tracer:
        cache = tracer.cache(include_inputs=include_inputs)
    assert cache["model.side"].output == [None, None, None]
    assert len(cache.side.entries) == 3
    if include_inputs:
        for k, inputs in enumerate(cache.side.inputs):
            assert torch.allclose(inputs[0][0], x * k)
    assert torch.allclose(cache.fc.output, net.fc(x))


def test_a_path_not_cached_is_a_key_error_by_subscript_and_an_attribute_error_by_name(gpt2_path):
    from nnsight import LanguageModel

    model = LanguageModel(gpt2_path, dispatch=True)
    with model.trace("Hello world") as tracer:
        cache = tracer.cache(modules=[model.lm_head])
    with pytest.raises(KeyError, match="model.transformer"):
        cache["model.transformer.h.0"]
    with pytest.raises(AttributeError, match="cached: model.lm_head"):
        cache.model.transformer
    assert not hasattr(cache.model, "transformer") and "model.transformer.h.0" not in cache
    assert cache["model.lm_head"].output.shape[-1] == 768
