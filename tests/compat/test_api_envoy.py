"""nnsight 0.8's ``Envoy(module)``: a root wrapper with ``.trace``, ``rename=`` and ``envoys=``;
models print like torch prints them (runs of identical ModuleList children folded)."""
import pytest
import torch

import nnsight
from nnsight import Envoy, NNsight
from nnsight.intervention.envoy import Envoy as EnvoyFromOldPath


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
        self.act = torch.nn.ReLU()

    def forward(self, x):
        return self.act(self.fc(x))


class Net(torch.nn.Module):
    def __init__(self, n=3):
        super().__init__()
        self.blocks = torch.nn.ModuleList([Block() for _ in range(n)])
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class Tagged(Envoy):
    """A custom envoy: a method that reads this module's value inside a trace."""

    def doubled(self):
        return self.output * 2


class Other(Envoy):
    pass


@pytest.fixture
def net():
    torch.manual_seed(0)
    return Net()


def _plain_with_zeroed_block(net, x, index):
    h = x
    for i, block in enumerate(net.blocks):
        h = block(h)
        if i == index:
            h = torch.zeros_like(h)
    return net.head(h)


def test_envoy_of_a_module_traces_and_matches_torch(net):
    assert EnvoyFromOldPath is Envoy
    model = Envoy(net)
    assert isinstance(model, Envoy) and isinstance(model, NNsight)
    x = torch.randn(2, 4)
    with model.trace(x):
        hidden = model.blocks[1].output.save()
        model.blocks[1].output[:] = 0
        out = model.output.save()
    with torch.no_grad():
        expected_hidden = net.blocks[1](net.blocks[0](x))
        assert torch.equal(hidden, torch.zeros_like(expected_hidden))  # the write shows in the saved tensor
        assert torch.allclose(out, _plain_with_zeroed_block(net, x, 1))
    with model.trace(x):
        untouched = model.blocks[1].output.save()
    assert torch.allclose(untouched, expected_hidden)


def test_envoys_by_class_and_by_path_pattern(net):
    by_class = Envoy(net, envoys={Block: Tagged})
    assert [type(b) for b in by_class.blocks] == [Tagged] * 3
    assert type(by_class.head) is Envoy and type(by_class.blocks[0].fc) is Envoy

    assert [type(b) for b in Envoy(net, envoys={"blocks.1": Tagged}).blocks] == [Envoy, Tagged, Envoy]
    assert [type(b) for b in Envoy(net, envoys={"blocks.*": Tagged}).blocks] == [Tagged] * 3
    deep = Envoy(net, envoys={"*.fc": Tagged})  # a leading `*`: at any depth
    assert all(type(b.fc) is Tagged and type(b) is Envoy for b in deep.blocks)
    every = Envoy(net, envoys={"*": Tagged})
    assert type(every.blocks) is Tagged and type(every.head) is Tagged
    assert type(Envoy(net, envoys={".blocks.*.fc": Tagged}).blocks[2].fc) is Tagged
    assert type(Envoy(net, envoys={"model.blocks.0": Tagged}).blocks[0]) is Tagged
    # a class key wins over a path key; a class key matches subclasses (torch.nn.Linear: fc and head)
    mixed = Envoy(net, envoys={"blocks.*": Other, Block: Tagged})
    assert [type(b) for b in mixed.blocks] == [Tagged] * 3
    linear = Envoy(net, envoys={torch.nn.Linear: Tagged})
    assert type(linear.head) is Tagged and type(linear.blocks[1].fc) is Tagged and type(linear.blocks[1]) is Envoy
    # among path patterns, the first that matches wins
    first = Envoy(net, envoys={"blocks.1": Other, "blocks.*": Tagged})
    assert [type(b) for b in first.blocks] == [Tagged, Other, Tagged]

    with pytest.raises(TypeError, match="subclass of Envoy"):
        Envoy(net, envoys={"blocks": int})


def test_custom_envoy_methods_work_inside_a_trace(net):
    model = Envoy(net, envoys={Block: Tagged})
    x = torch.randn(3, 4)
    with model.trace(x):
        doubled = model.blocks[0].doubled().save()
    with torch.no_grad():
        assert torch.allclose(doubled, 2 * net.blocks[0](x))


def test_rename_with_class_keys_and_leading_dot_keys(net):
    model = Envoy(net, rename={torch.nn.Linear: "lin", ".blocks": "layers", "act": "relu"})
    assert model.lin is model.head  # the root's only Linear child
    assert model.blocks[0].lin is model.blocks[0].fc
    assert model.layers is model.blocks
    assert model.layers[2].relu is model.blocks[2].act
    x = torch.randn(2, 4)
    with model.trace(x):
        via_alias = model.layers[1].lin.output.save()
    with torch.no_grad():
        assert torch.allclose(via_alias, net.blocks[1].fc(net.blocks[0](x)))


def test_rename_refuses_ambiguous_and_conflicting_aliases(net):
    with pytest.raises(ValueError, match=r"matches 3 modules under `model.blocks`"):
        Envoy(net, rename={Block: "block"})  # an alias names one module
    with pytest.raises(ValueError, match=r"conflicts with the same alias"):
        Envoy(net, rename={".blocks": "x", ".head": "x"})
    with pytest.raises(ValueError, match=r"conflicts with the same alias"):
        Envoy(net, rename={"fc": "z", "act": "z"})
    with pytest.raises(ValueError, match=r"would hide the module `model.head`"):
        Envoy(net, rename={".blocks": "head"})


def test_print_folds_repeated_children_like_torch(net):
    assert repr(Envoy(net)) == repr(net)
    text = repr(Envoy(net))
    assert "(0-2): 3 x Block(" in text and "(1): Block" not in text
    # a child with an alias is shown with it, so it is not folded into the run
    aliased = repr(Envoy(net, rename={".blocks.1": "blocks.middle"}))  # bound on `blocks`
    assert "(0): Block(" in aliased and "(1) [middle]: Block(" in aliased and "(2): Block(" in aliased


def test_language_model_prints_like_its_module(gpt2_path):
    import transformers

    model = nnsight.LanguageModel(gpt2_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(gpt2_path)
    text = repr(model)
    assert "(0-3): 4 x GPT2Block(" in text
    # torch's own print of the module, then the envoy-only generator child
    assert text.startswith(repr(hf)[:-2])
    assert "(generator): Generator(" in text


def test_language_model_takes_envoys_and_class_renames(gpt2_path):
    import transformers
    from transformers.models.gpt2.modeling_gpt2 import GPT2MLP, GPT2Attention

    model = nnsight.LanguageModel(gpt2_path, envoys={GPT2MLP: Tagged}, rename={GPT2Attention: "attention"})
    assert all(type(block.mlp) is Tagged for block in model.transformer.h)
    assert model.transformer.h[2].attention is model.transformer.h[2].attn
    hf = transformers.AutoModelForCausalLM.from_pretrained(gpt2_path).eval()
    tok = transformers.AutoTokenizer.from_pretrained(gpt2_path)
    captured = {}
    hooks = [hf.transformer.h[2].mlp.register_forward_hook(lambda m, i, o: captured.update(mlp=o)),
             hf.transformer.h[1].attn.register_forward_hook(lambda m, i, o: captured.update(attn=o[0]))]
    with torch.no_grad():
        hf(**tok("Hello world", return_tensors="pt"))
    for hook in hooks:
        hook.remove()
    with model.trace("Hello world"):
        attn = model.transformer.h[1].attention.output[0].save()
        doubled = model.transformer.h[2].mlp.doubled().save()
    assert torch.allclose(attn, captured["attn"], atol=1e-6)
    assert torch.allclose(doubled, 2 * captured["mlp"], atol=1e-6)
