"""``model.scan(..., remote=...)``: the scan runs on the server's fake tensors; shapes and dtypes
come back as a local scan's, saved tensors as meta tensors (shape and dtype, no data)."""
import torch

import nnsight

PROMPT = "The Eiffel Tower is in the city of"


def _scan(model, remote):
    with model.scan(PROMPT, remote=remote):
        shape = nnsight.save(model.transformer.h[0].output.shape)
        hidden = model.transformer.h[1].output.save()
        sizes = nnsight.save([model.lm_head.output.shape[-1], str(model.lm_head.output.dtype)])
    return shape, hidden, sizes


def test_remote_scan_gives_the_shapes_of_a_local_scan(gpt2, remote_config):
    shape, hidden, sizes = _scan(gpt2, True)
    local_shape, local_hidden, local_sizes = _scan(gpt2, None)
    assert shape == local_shape == torch.Size([1, 8, 64])
    assert sizes == local_sizes == [768, "torch.float32"]
    assert hidden.device.type == "meta"  # no data: a scan computes none
    assert (hidden.shape, hidden.dtype) == (local_hidden.shape, local_hidden.dtype)


def test_a_trace_after_a_remote_scan_computes_real_values(gpt2, remote_config):
    _scan(gpt2, True)
    with gpt2.trace(PROMPT, remote=True):
        logits = gpt2.lm_head.output.save()
    with gpt2.trace(PROMPT):
        local = gpt2.lm_head.output.save()
    assert torch.equal(logits, local)


def test_remote_local_scan_of_a_plain_module():
    from nnsight import NNsight

    model = NNsight(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()))
    with model.scan(torch.zeros(2, 4), remote="local"):
        out = model[0].output.save()
    assert out.shape == (2, 3) and out.device.type == "meta"
