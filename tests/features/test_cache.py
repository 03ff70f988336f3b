"""tracer.cache(): module activations recorded during a trace, by path and by
attribute, with include_inputs / include_output / modules — checked against forward hooks."""
import pytest
import torch

from nnsight import NNsight

from feature_utils import make_mlp


def hook_all(net, x):
    outs, ins = {}, {}
    handles = []
    for name, module in net.named_modules():
        path = "model" if name == "" else f"model.{name}"
        handles.append(module.register_forward_hook(
            lambda m, a, o, path=path: (outs.__setitem__(path, o.detach().clone()), ins.__setitem__(path, a))[0] and None))
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    return outs, ins


@pytest.fixture
def net():
    return make_mlp()


def test_cache_every_output_by_path_and_attribute(net):
    model = NNsight(net)
    x = torch.randn(3, 8)
    with model.trace(x) as tracer:
        cache = tracer.cache()
    outs, _ = hook_all(net, x)
    assert set(cache.keys()) == set(outs)
    for path, value in outs.items():
        assert torch.allclose(cache[path].output, value)
    assert torch.allclose(cache.model[2].output, outs["model.2"])
    assert torch.allclose(cache["model.2"].output, cache.model[2].output)
    assert torch.allclose(cache.model.output, outs["model"])
    assert cache[ "model.2"].output.requires_grad is False  # detached by default


def test_cache_sees_interventions_made_before_it(net):
    model = NNsight(net)
    x = torch.randn(2, 8)
    with model.trace(x) as tracer:
        cache = tracer.cache(modules=[model[0], "model.2"])
        model[0].output[:] = 1
    assert set(cache.keys()) == {"model.0", "model.2"}
    assert torch.all(cache["model.0"].output == 1)
    assert torch.allclose(cache["model.2"].output, net[1:3](torch.ones(2, 8)))


def test_include_inputs_and_not_outputs(net):
    model = NNsight(net)
    x = torch.randn(2, 8)
    with model.trace(x) as tracer:
        cache = tracer.cache(include_inputs=True, include_output=False, modules=[model[4]])
    entry = cache["model.4"]
    assert entry.output is None
    args, kwargs = entry.inputs
    assert torch.allclose(args[0], net[:4](x)) and kwargs == {}
    assert torch.allclose(entry.input, net[:4](x))


def test_each_invoke_caches_its_own_rows_and_a_root_cache_sees_all(net):
    model = NNsight(net)
    a, b = torch.randn(1, 8), torch.randn(2, 8)
    with model.trace() as tracer:
        everything = tracer.cache(modules=["model.6"])
        with tracer.invoke(a):
            cache_a = tracer.cache(modules=["model.6"])
        with tracer.invoke(b):
            cache_b = tracer.cache(modules=["model.6"])
    outs, _ = hook_all(net, torch.cat([a, b]))
    assert torch.allclose(cache_a["model.6"].output, outs["model.6"][:1])
    assert torch.allclose(cache_b["model.6"].output, outs["model.6"][1:])
    assert torch.allclose(everything["model.6"].output, outs["model.6"])


def test_generation_caches_one_entry_per_step(gpt2):
    with gpt2.generate("Hello world", max_new_tokens=3) as tracer:
        cache = tracer.cache(modules=[gpt2.lm_head, gpt2.transformer.h[0]])
        out = tracer.result.save()
    logits = cache.model.lm_head.output
    assert isinstance(logits, list) and len(logits) == 3
    assert len(cache["model.transformer.h.0"]) == 3
    assert torch.equal(torch.stack([l[0, -1].argmax() for l in logits]), out[0, -3:])
    # attribute access with the short form, and by ModuleList index
    assert cache.transformer.h[0].output[0].shape == cache.model.transformer.h[0].output[0].shape


def test_cache_options_device_dtype(net):
    model = NNsight(net)
    x = torch.randn(2, 8)
    with model.trace(x) as tracer:
        cache = tracer.cache(modules=["model.0"], dtype=torch.float64)
    assert cache["model.0"].output.dtype == torch.float64


def test_missing_module_is_a_clear_error(net):
    model = NNsight(net)
    with model.trace(torch.randn(1, 8)) as tracer:
        cache = tracer.cache(modules=["model.0"])
    with pytest.raises((KeyError, AttributeError), match="model.4"):
        cache["model.4"].output
    assert "model.0" in cache and "model.4" not in cache
