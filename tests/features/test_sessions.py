"""Sessions: traces inside `model.session()` share variables without
.save(); only saved values survive the session."""
import pytest
import torch

import nnsight
from nnsight import NNsight

from feature_utils import hf_generate, make_mlp


def test_traces_share_unsaved_values_and_only_saved_ones_survive(llama):
    model = llama
    with model.session() as session:
        with model.trace("Megan Rapinoe plays the sport of"):
            hs = model.model.layers[1].output[:, 5, :]  # no .save(): shared within the session
        with model.trace() as tracer:
            with tracer.invoke("Shaquille O'Neal plays the sport of"):
                out_clean = model.lm_head.output[0][-1].argmax(dim=-1).save()
            with tracer.invoke("Shaquille O'Neal plays the sport of"):
                model.model.layers[1].output[:, 6, :] = hs
                out_patched = model.lm_head.output[0][-1].save()
    with pytest.raises(NameError, match="`hs` .* not saved"):
        str(hs)
    assert out_clean.dim() == 0 and out_patched.shape == (model.config.vocab_size,)

    # the same patch done by hand with hooks
    tok = model.tokenizer
    mod = model._module
    captured = {}
    h = mod.model.layers[1].register_forward_hook(lambda m, a, o: captured.update(hs=o[:, 5, :].clone()))
    with torch.no_grad():
        mod(**tok("Megan Rapinoe plays the sport of", return_tensors="pt"))
    h.remove()

    def patch(m, a, o):
        o[:, 6, :] = captured["hs"]
        return o

    h = mod.model.layers[1].register_forward_hook(patch)
    try:
        with torch.no_grad():
            expected = mod(**tok("Shaquille O'Neal plays the sport of", return_tensors="pt")).logits[0, -1]
    finally:
        h.remove()
    assert torch.allclose(out_patched, expected, atol=1e-5)


def test_plain_code_between_traces_and_a_generation():
    net = make_mlp()
    model = NNsight(net)
    x = torch.randn(2, 8)
    with model.session():
        with model.trace(x):
            h = model[2].output
        mean = h.mean(dim=0, keepdim=True)  # ordinary Python on the main side
        n_traces = 1
        with model.trace(x):
            model[2].output = mean.expand(2, 8)
            out = model.output.save()
            n_traces += 1
        total = nnsight.save(n_traces)
    assert total == 2
    assert torch.allclose(out, net[3:](net[:3](x).mean(0, keepdim=True).expand(2, 8)))
    for unsaved in ("h", "mean"):
        with pytest.raises(NameError, match=f"`{unsaved}` .* not saved"):
            str(locals()[unsaved])


def test_session_with_generation_and_edit(gpt2):
    with gpt2.session():
        with gpt2.generate("Hello world", max_new_tokens=3) as tracer:
            first = tracer.result
        with gpt2.edit() as edited:
            gpt2.transformer.h[0].output[:] = 0
        with edited.generate("Hello world", max_new_tokens=3) as tracer:
            second = tracer.result
        n = len(gpt2.tokenizer("Hello world")["input_ids"])
        same_prompt = nnsight.save(bool(torch.equal(first[:, :n], second[:, :n])))
        differs = nnsight.save(not torch.equal(first, second))
        tokens = nnsight.save(first)
    assert same_prompt and differs
    assert torch.equal(tokens, hf_generate(gpt2, ["Hello world"], max_new_tokens=3))
    with gpt2.generate("Hello world", max_new_tokens=3) as tracer:
        again = tracer.result.save()
    assert torch.equal(again, tokens)  # the edit inside the session made a copy


def test_session_inside_a_function_writes_back_saved_locals():
    net = make_mlp()
    model = NNsight(net)

    def experiment(x):
        with model.session():
            with model.trace(x):
                h0 = model[0].output
            with model.trace(x):
                model[0].output = h0 * 0
                out = model.output.save()
        return out

    x = torch.randn(1, 8)
    assert torch.allclose(experiment(x), net[1:](torch.zeros(1, 8)))


def test_values_saved_in_an_inner_trace_survive_while_the_session_runs():
    net = make_mlp()
    model = NNsight(net)
    x = torch.randn(1, 8)
    with model.session():
        with model.trace(x):
            a = model[0].output.save()
        b = a + 1  # a saved value used between traces
        with model.trace(x):
            c = model[0].output.save()
        same = nnsight.save(bool(torch.equal(a, c)))
    assert same and torch.allclose(a, net[0](x))
    with pytest.raises(NameError, match="`b` .* not saved"):
        str(b)


def test_a_session_is_one_remote_local_request():
    net = make_mlp()
    model = NNsight(net)
    x = torch.randn(2, 8)
    with model.session(remote="local") as session:
        with model.trace(x):
            h = model[0].output
        with model.trace(x):
            model[0].output = h * 0
            out = model.output.save()
    assert torch.allclose(out, net[1:](torch.zeros(2, 8)))
    with pytest.raises(NameError, match="`h` .* not saved"):
        str(h)
