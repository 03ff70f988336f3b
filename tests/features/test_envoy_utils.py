"""Envoy utilities: aliases, conflicts, devices, navigation,
the underlying module and printing the envoy tree."""
import warnings

import pytest
import torch

from nnsight import Envoy, LanguageModel, NNsight


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


class Named(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1 = torch.nn.Linear(4, 4)
        self.layer2 = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.layer2(self.layer1(x))


# ------------------------------------------------------------------ aliases

def test_rename_mounts_paths_at_the_root_on_language_model(gpt2_path):
    model = LanguageModel(gpt2_path, dispatch=True,
                          rename={".transformer.h": ".layers", ".transformer.wte": ".embed"})
    assert model.layers is model.transformer.h
    assert model.layers[0] is model.transformer.h[0]
    assert model.embed is model.transformer.wte
    with model.trace("Hello world"):
        emb = model.embed.output.save()
        via_alias = model.layers[1].output.save()
    with model.trace("Hello world"):
        via_path = model.transformer.h[1].output.save()
    assert torch.equal(via_alias, via_path) and emb.shape[-1] == 64
    assert model.layers[0].path == "model.transformer.h.0"   # the provider path is unchanged


def test_simple_rename_applies_wherever_the_name_appears(llama_path):
    model = LanguageModel(llama_path, dispatch=True, rename={"self_attn": "attention", "mlp": "ff"})
    for layer in model.model.layers:
        assert layer.attention is layer.self_attn and layer.ff is layer.mlp
    with model.trace("Hello"):
        a = model.model.layers[0].attention.output[0].save()
        f = model.model.layers[1].ff.output.save()
    assert a.shape[-1] == 64 and f.shape[-1] == 64


def test_several_aliases_for_one_path():
    model = NNsight(Named(), rename={".layer1": ["first", "l1"], "layer2": "second"})
    assert model.first is model.l1 is model.layer1 and model.second is model.layer2
    assert model._alias.alias_to_name == {"model.first": "model.layer1", "model.l1": "model.layer1",
                                          "model.second": "model.layer2"}
    x = torch.randn(2, 4)
    with model.trace(x):
        h = model.l1.output.save()
        model.second.output[:] = 0
        out = model.output.save()
    assert torch.allclose(h, model._module.layer1(x)) and torch.equal(out, torch.zeros(2, 2))
    assert "(layer1) [first, l1]: Linear(" in repr(model)
    assert model.get("first") is model.layer1


def test_alias_that_hides_something_is_refused():
    with pytest.raises(ValueError, match="would hide"):
        NNsight(Named(), rename={"layer1": "layer2"})
    with pytest.raises(ValueError, match="would hide the envoy attribute"):
        NNsight(Named(), rename={"layer1": "trace"})


# ---------------------------------------------------------------- conflicts

class HasOutput(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = torch.nn.Linear(4, 8)
        self.output = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.output(torch.relu(self.hidden(x)))


class HasInput(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.input = torch.nn.Linear(4, 4)
        self.body = HasOutput()

    def forward(self, x):
        return self.body(self.input(x))


def test_child_named_output_mounts_nnsight_access_at_nns_output():
    torch.manual_seed(0)
    net = HasOutput()
    with pytest.warns(UserWarning, match=r"pre-defined `output` attribute. nnsight access mounted at `.nns_output`"):
        model = NNsight(net)
    assert isinstance(model.output, Envoy) and model.output._module is net.output
    x = torch.randn(3, 4)
    with model.trace(x):
        model.hidden.output[:] = 0
        head = model.output.output.save()       # the child module's output
        whole = model.nns_output.save()          # the root module's output
    assert torch.equal(head, whole)
    assert torch.allclose(whole, net.output(torch.zeros(3, 8)))
    with model.trace(x):
        model.nns_output = model.nns_output * 2  # the root's output, written
        doubled = model.nns_output.save()
    assert torch.allclose(doubled, net(x) * 2)
    assert type(model).__name__ == "NNsight.Preserved" and isinstance(model, NNsight)


def test_child_named_input_mounts_at_nns_input():
    torch.manual_seed(0)
    net = HasInput()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = NNsight(net)
    assert {str(w.message).split("`")[1] for w in caught} >= {"input", "output"}
    x = torch.randn(2, 4)
    with model.trace(x):
        root_in = model.nns_input.save()
        inner = model.input.output.save()
        body_in = model.body.input.save()
    assert torch.equal(root_in, x) and torch.allclose(body_in, net.input(x)) and torch.equal(inner, body_in)


# -------------------------------------------------------------- navigation

def test_modules_named_modules_and_get(gpt2_path):
    model = LanguageModel(gpt2_path, dispatch=True)
    paths = [path for path, _ in model.named_modules()]
    assert paths[0] == "model" and "model.transformer.h.0.attn" in paths
    assert {id(e._module) for e in model.modules()} >= {id(m) for m in model._module.modules()}
    attn = model.modules(include_fn=lambda e: e.path.endswith(".attn"))
    assert [e.path for e in attn] == [f"model.transformer.h.{i}.attn" for i in range(4)]
    named = dict(model.named_modules(include_fn=lambda e: isinstance(e._module, torch.nn.Linear)))
    assert list(named) == ["model.lm_head"]
    assert model.get("transformer.h.0.mlp") is model.transformer.h[0].mlp
    assert model.get("model.transformer.h.2") is model.transformer.h[2]
    layer_idx = 3
    assert model.get(f"transformer.h.{layer_idx}") is model.transformer.h[3]
    assert model.get("transformer.h.0.attn.num_heads") == model.transformer.h[0].attn.num_heads == 2


def test_get_inside_a_trace(gpt2_path):
    model = LanguageModel(gpt2_path, dispatch=True)
    with model.trace("Hello"):
        out = model.get("transformer.h.1").output.save()
    with model.trace("Hello"):
        ref = model.transformer.h[1].output.save()
    assert torch.equal(out, ref)


# ----------------------------------------------------------------- devices

def test_device_utilities():
    net = mlp()
    model = NNsight(net)
    assert model.device == torch.device("cpu") and model.devices == {torch.device("cpu")}
    assert model.to(torch.float64) is model and net[0].weight.dtype == torch.float64
    assert model.to("cpu") is model and model.cpu() is model
    assert model[0].device == torch.device("cpu")
    meta = NNsight(torch.nn.Linear(2, 2, device="meta"))
    assert meta.devices == {torch.device("meta")}
    if not torch.cuda.is_available():
        with pytest.raises((AssertionError, RuntimeError)):
            model.cuda()


# --------------------------------------------------------- module and repr

def test_underlying_module_and_attribute_delegation(gpt2_path):
    model = LanguageModel(gpt2_path, dispatch=True)
    real = model.transformer.h[0]._module
    assert isinstance(real, torch.nn.Module) and real is model._module.transformer.h[0]
    assert model.lm_head.weight is model.lm_head._module.weight
    assert model.transformer.h[0].attn.num_heads == real.attn.num_heads


def test_printing_the_envoy_tree(gpt2_path):
    model = LanguageModel(gpt2_path, dispatch=True, rename={".transformer.h": ".layers"})
    text = repr(model)
    assert text.startswith("GPT2LMHeadModel(")
    assert "(transformer): GPT2Model(" in text
    assert "(wte): Embedding(768, 64)" in text
    assert "(layers): -> model.transformer.h" in text
    assert "(lm_head): Linear(in_features=64, out_features=768, bias=False)" in text
    assert repr(model.transformer.h[0].mlp.c_fc) == repr(model._module.transformer.h[0].mlp.c_fc)
    assert str(NNsight(mlp())) == repr(mlp())   # same layout as torch's own repr


def test_missing_module_error_shows_the_structure():
    model = NNsight(mlp())
    with pytest.raises(AttributeError, match=r"Sequential at `model` has no attribute 'fake_layer'\. Its submodules: 0, 1, 2\."):
        with model.trace(torch.randn(1, 4)):
            out = model.fake_layer.output.save()
