"""``with tracer.local():`` -- a block of a remote trace run on the client (here: ``remote='local'``,
the in-process server, through the same encode/decode as a real one)."""
import traceback

import pytest
import torch

from nnsight.tracing.base import Tracer


class ClientOnlyScale:
    """Client-side state (the server never gets this class: the block runs here)."""

    def __init__(self, factor):
        self.factor = factor

    def apply(self, x):
        return x * self.factor


def client_double(x):
    return x * 2


def _layer0(model):
    return model.transformer.h[0]


def test_block_runs_on_the_client_with_server_values_and_writes_back(gpt2):
    scale = ClientOnlyScale(torch.tensor(0.5))
    with gpt2.trace("Hello world", remote="local") as tracer:
        hidden = gpt2.transformer.h[0].output[0]
        with tracer.local():
            changed = scale.apply(client_double(hidden))
            seen = hidden.shape
        gpt2.transformer.h[0].output[0][:] = changed
        logits = gpt2.lm_head.output.save()
    with gpt2.trace("Hello world"):
        hidden = gpt2.transformer.h[0].output[0]
        gpt2.transformer.h[0].output[0][:] = hidden * 2 * 0.5
        expected = gpt2.lm_head.output.save()
    with gpt2.trace("Hello world"):
        plain = gpt2.lm_head.output.save()
    assert torch.equal(logits, expected)
    assert torch.equal(logits, plain)  # x * 2 * 0.5 == x: a no-op edit keeps the logits


def test_in_place_edit_in_the_block_reaches_the_activation(gpt2):
    bias = torch.full((1,), 3.0)
    with gpt2.trace("Hello world", remote="local") as tracer:
        hidden = gpt2.transformer.h[0].output[0]
        with tracer.local():
            hidden[:] = client_double(hidden) + bias
        logits = gpt2.lm_head.output.save()
    with gpt2.trace("Hello world"):
        hidden = gpt2.transformer.h[0].output[0]
        hidden[:] = hidden * 2 + 3.0
        expected = gpt2.lm_head.output.save()
    assert torch.allclose(logits, expected)


def test_block_saves_and_assigns_plain_values(gpt2):
    with gpt2.trace("Hello world", remote="local") as tracer:
        hidden = gpt2.transformer.h[0].output[0]
        with tracer.local():
            norm = float(hidden.norm())
            mean = hidden.mean().save()
        total = gpt2.lm_head.output.sum().save()
    with gpt2.trace("Hello world"):
        expected = gpt2.transformer.h[0].output[0].mean().save()
    assert isinstance(mean, torch.Tensor) and torch.equal(mean, expected)
    assert isinstance(total, torch.Tensor)


def test_block_runs_inline_without_remote(gpt2):
    with gpt2.trace("Hello world") as tracer:
        hidden = gpt2.transformer.h[0].output[0]
        with tracer.local():
            doubled = client_double(hidden).save()
    assert doubled.shape[-1] == 64 or doubled.ndim == 3


def test_error_in_the_block_names_the_users_line(gpt2):
    with pytest.raises(ZeroDivisionError) as info:
        with gpt2.trace("Hello world", remote="local") as tracer:
            hidden = gpt2.transformer.h[0].output[0]
            with tracer.local():
                ratio = 1 / 0  # the user's line
            out = gpt2.lm_head.output.save()
    frames = traceback.extract_tb(info.value.__traceback__)
    assert any(f.filename == __file__ and "1 / 0" in (f.line or "") for f in frames), frames


def test_the_block_body_is_not_sent(gpt2):
    with gpt2.trace("Hello world", remote="local") as tracer:
        hidden = gpt2.transformer.h[0].output[0]
        with tracer.local():
            changed = ClientOnlyScale(1.0).apply(hidden)
        out = gpt2.lm_head.output.save()
    sent = tracer.remote_request.program
    assert "ClientOnlyScale" not in "".join(u.source for u in sent.units)
    assert all(b.name != "ClientOnlyScale" for b in sent.bindings)
    local = [u for u in sent.units if "local" in u.facts]
    assert len(local) == 1 and local[0].reads == ("hidden",) and local[0].assigned == ("changed",)


def test_block_inside_an_invoke(gpt2):
    with gpt2.trace(remote="local") as tracer:
        with tracer.invoke("Hello world"):
            hidden = gpt2.transformer.h[0].output[0]
            with tracer.local():
                hidden[:] = client_double(hidden)
            logits = gpt2.lm_head.output.save()
    with gpt2.trace("Hello world"):
        hidden = gpt2.transformer.h[0].output[0]
        hidden[:] = hidden * 2
        expected = gpt2.lm_head.output.save()
    assert torch.allclose(logits, expected)


def test_block_in_every_generation_step(gpt2):
    with gpt2.generate("Hello", max_new_tokens=3, remote="local") as tracer:
        tokens = list().save()
        for step in tracer.iter[:]:
            top = gpt2.lm_head.output[0][-1].argmax(dim=-1)
            with tracer.local():
                seen = int(top)  # a plain int, computed here
            tokens.append(seen)
    with gpt2.generate("Hello", max_new_tokens=3) as local_run:
        out = local_run.result.save()
    assert len(tokens) == 3 and all(isinstance(t, int) for t in tokens)
    assert tokens == [int(t) for t in out[0][-3:]]


def test_block_in_a_trace_inside_a_session(gpt2):
    with gpt2.session(remote="local"):
        with gpt2.trace("Hello world") as inner:
            hidden = gpt2.transformer.h[0].output[0]
            with inner.local():
                hidden[:] = client_double(hidden)
            logits = gpt2.lm_head.output.save()
    with gpt2.trace("Hello world"):
        hidden = gpt2.transformer.h[0].output[0]
        hidden[:] = hidden * 2
        expected = gpt2.lm_head.output.save()
    assert torch.allclose(logits, expected)


def test_an_unmarked_block_never_runs_its_body_on_the_server(gpt2):
    """A with-statement the compiler does not mark local (here: a second item; or an older
    client) fails on the server instead of running the client's code there."""
    import contextlib

    from runtime.local_blocks import LocalBlockError

    with pytest.raises(LocalBlockError, match="was sent to run on the server"):
        with gpt2.trace("Hello world", remote="local") as tracer:
            hidden = gpt2.transformer.h[0].output[0]
            with tracer.local(), contextlib.nullcontext():
                hidden[:] = 0
            out = gpt2.lm_head.output.save()
