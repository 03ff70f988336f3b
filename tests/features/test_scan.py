"""model.scan: fake tensors give shapes without computing; fake values stay on envoys."""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor

import nnsight
from nnsight import LanguageModel, NNsight


def test_scan_gives_shapes_on_a_meta_model_without_dispatching(gpt2_path):
    model = LanguageModel(gpt2_path)
    with model.scan("Hello world"):
        dim = nnsight.save(model.transformer.h[0].output.shape[-1])
        shape = nnsight.save(tuple(model.lm_head.output.shape))
    n = len(model.tokenizer("Hello world")["input_ids"])
    assert dim == 64 and shape == (1, n, 768)
    assert not model.dispatched and model.device == torch.device("meta")
    # the fake values stay on the envoys after the scan
    assert isinstance(model.transformer.h[0]._fake_output, FakeTensor)
    assert model.transformer.h[0]._fake_output.shape == (1, n, 64)
    args, kwargs = model.transformer.h[0]._fake_inputs
    assert args[0].shape == (1, n, 64)
    assert model.transformer.h[0].output.shape == (1, n, 64)   # outside a trace: the fake output
    assert model.transformer.h[0].input.shape == (1, n, 64)
    with model.trace("Hello world"):   # a real trace afterwards still works (and dispatches)
        real = model.transformer.h[0].output.save()
    assert not isinstance(real, FakeTensor) and real.shape == (1, n, 64) and model.dispatched


def test_scan_on_a_dispatched_model_leaves_weights_alone(gpt2_path):
    model = LanguageModel(gpt2_path, dispatch=True)
    before = model._module.lm_head.weight.clone()
    with model.scan("The Eiffel Tower is in"):
        model.transformer.h[0].output[:] = 0   # edits run on fake tensors
        logits = model.output.logits.save()
    assert isinstance(logits, FakeTensor)
    assert torch.equal(model._module.lm_head.weight, before)


def test_scan_checks_indexing(gpt2_path):
    model = LanguageModel(gpt2_path)
    with pytest.raises(IndexError):
        with model.scan("Hello"):
            model.transformer.h[0].output[:, 50] = 0   # sequence is shorter than 51


def test_scan_on_nnsight_mlp():
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 2))
    model = NNsight(net)
    with model.scan(torch.randn(3, 5)):
        hidden = nnsight.save(model[0].output.shape)
        out = model.output.save()
    assert hidden == (3, 7) and tuple(out.shape) == (3, 2) and isinstance(out, FakeTensor)
    assert model[2]._fake_inputs[0][0].shape == (3, 7)
    assert model._fake_output.shape == (3, 2)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())  # hooks removed


def test_scan_with_invokes(gpt2_path):
    model = LanguageModel(gpt2_path)
    with model.scan() as tracer:
        with tracer.invoke("Hello"):
            a = nnsight.save(model.lm_head.output.shape)
        with tracer.invoke("The Eiffel Tower is in"):
            b = nnsight.save(model.lm_head.output.shape)
    assert a[0] == 1 and b[0] == 1 and a[1] == b[1]  # left-padded into one batch
