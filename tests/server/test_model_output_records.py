"""A whole ``model.output`` (a transformers ``ModelOutput``) saved remotely comes back as one.

Each mode -- the loopback server (``remote=True``), the in-process server path
(``remote='local'``), and a session on either -- must give the value a local run gives:
the same class, items, ``None`` fields and key/value cache, tensors bit for bit.
"""
from collections import Counter, OrderedDict

import pytest
import torch

PROMPT = "Hello"


def _same_output(got, want):
    assert type(got) is type(want)
    assert list(got.keys()) == list(want.keys())
    assert torch.equal(got.logits, want.logits) and got.logits is got["logits"]
    assert got.loss is None and got.attentions is None
    assert type(got.past_key_values) is type(want.past_key_values)
    assert len(got.past_key_values.layers) == len(want.past_key_values.layers)
    for a, b in zip(got.past_key_values.layers, want.past_key_values.layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    assert torch.equal(got.to_tuple()[0], want.to_tuple()[0])


def _local(model):
    with model.trace(PROMPT):
        out = model.output.save()
    return out


@pytest.mark.parametrize("remote", ["local", True])
def test_model_output_saved_in_a_trace(gpt2, remote_config, remote):
    with gpt2.trace(PROMPT, remote=remote):
        out = gpt2.output.save()
    _same_output(out, _local(gpt2))


@pytest.mark.parametrize("remote", ["local", True])
def test_model_output_saved_in_a_session(gpt2, remote_config, remote):
    with gpt2.session(remote=remote):
        with gpt2.trace(PROMPT):
            out = gpt2.output.save()
        with gpt2.trace(PROMPT):
            logits = gpt2.output["logits"].save()
    want = _local(gpt2)
    _same_output(out, want)
    assert torch.equal(logits, want.logits)


def test_counter_and_ordered_dict_subclass_come_back(gpt2, remote_config):
    """Other mapping records: a ``Counter`` and an ``OrderedDict`` made on the server."""
    with gpt2.trace(PROMPT, remote=True):
        top = gpt2.lm_head.output[0, -1].argmax().item()
        counts = Counter({"a": 2, "b": 1}).save()
        ordered = OrderedDict([("z", 1), ("a", 2)]).save()
        tops = Counter([top, top]).save()
    assert type(counts) is Counter and counts == Counter({"a": 2, "b": 1})
    assert type(ordered) is OrderedDict and list(ordered) == ["z", "a"]
    with gpt2.trace(PROMPT):
        want = gpt2.lm_head.output[0, -1].argmax().item().save()
    assert tops == Counter({want: 2})
