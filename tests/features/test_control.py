"""Control flow across invokes: tracer.stop(), .skip(value), tracer.barrier(n),
checked against plain PyTorch."""
import pytest
import torch

from nnsight import NNsight

from feature_utils import make_mlp


@pytest.fixture
def net():
    return make_mlp()


def counting(module):
    """Count calls of ``module`` (a pre-hook: counts calls that raise before returning, too)."""
    calls = []
    handle = module.register_forward_pre_hook(lambda m, a: calls.append(1))
    return calls, handle


# ------------------------------------------------------------------ stop


def test_stop_keeps_values_saved_before_and_skips_the_rest(net):
    model = NNsight(net)
    x = torch.randn(2, 8)
    calls, handle = counting(net[6])
    try:
        with model.trace(x) as tracer:
            h0 = model[0].output.save()
            h2 = model[2].output.save()
            tracer.stop()
            never = model[6].output.save()
    finally:
        handle.remove()
    assert torch.allclose(h0, net[0](x))
    assert torch.allclose(h2, net[:3](x))
    assert calls == []  # the model stopped before layer 6
    with pytest.raises(NameError, match="`never` was set inside the trace .* not saved"):
        str(never)  # set after the stop: never ran, never saved


def test_stop_with_several_invokes_ends_the_whole_run(net):
    model = NNsight(net)
    a, b = torch.randn(1, 8), torch.randn(1, 8)
    calls, handle = counting(net[6])
    try:
        with model.trace() as tracer:
            with tracer.invoke(a):
                ha = model[0].output.save()
                model[2].output[:] = 0
                h4 = model[4].output.save()
                tracer.stop()
            with tracer.invoke(b):
                hb = model[2].output.save()
                late = model[6].output.save()
    finally:
        handle.remove()
    assert torch.allclose(ha, net[0](a))
    assert torch.allclose(h4, net[3:5](torch.zeros(1, 8)))
    assert torch.allclose(hb, net[:3](b))   # the second invoke ran up to where the model stopped
    assert calls == []
    with pytest.raises(NameError, match="`late` .* not saved"):
        str(late)


def test_stop_in_generation_stops_generating(gpt2):
    calls, handle = counting(gpt2._module.lm_head)
    try:
        with gpt2.generate("Hello world", max_new_tokens=5) as tracer:
            for step in tracer.iter[:]:
                logits = gpt2.lm_head.output.save()
                if step == 1:
                    tracer.stop()
    finally:
        handle.remove()
    assert len(calls) == 2 and logits.shape[1] == 1


# ------------------------------------------------------------------ skip


class CountedLinear(torch.nn.Linear):
    calls = 0

    def forward(self, x):
        type(self).calls += 1
        return super().forward(x)


def test_skip_single_invoke_substitutes_the_output(net):
    counted = CountedLinear(8, 8)
    counted.load_state_dict(net[2].state_dict())
    net[2] = counted
    model = NNsight(net)
    x = torch.randn(3, 8)
    CountedLinear.calls = 0
    with model.trace(x):
        h1 = model[1].output
        model[2].skip(h1 * 2)
        skipped = model[2].output.save()
        out = model.output.save()
    assert CountedLinear.calls == 0  # the skipped module's forward never ran
    h1_ref = net[:2](x)
    assert torch.allclose(skipped, h1_ref * 2)
    assert torch.allclose(out, net[3:](h1_ref * 2))


def test_skip_a_transformer_layer_like_the_design_example(gpt2):
    with gpt2.trace("Hello world"):
        layer0_out = gpt2.transformer.h[0].output
        gpt2.transformer.h[1].skip(layer0_out)
        result = gpt2.output.logits.save()
    mod = gpt2._module
    original = mod.transformer.h[1].forward
    mod.transformer.h[1].forward = lambda hidden_states, *a, **k: hidden_states  # plain torch skip
    try:
        enc = gpt2.tokenizer("Hello world", return_tensors="pt")
        with torch.no_grad():
            expected = mod(**enc).logits
    finally:
        del mod.transformer.h[1].forward
    assert mod.transformer.h[1].forward == original
    assert torch.allclose(result, expected, atol=1e-5)


def test_skip_in_every_invoke_with_its_own_value(net):
    model = NNsight(net)
    a, b = torch.randn(1, 8), torch.randn(2, 8)
    with model.trace() as tracer:
        with tracer.invoke(a):
            model[4].skip(torch.zeros(1, 8))
            out_a = model.output.save()
        with tracer.invoke(b):
            model[4].skip(model[3].output + 1)
            out_b = model.output.save()
    assert torch.allclose(out_a, net[5:](torch.zeros(1, 8)))
    assert torch.allclose(out_b, net[5:](net[:4](b) + 1))


def test_skip_in_only_one_of_two_invokes_is_an_error(net):
    model = NNsight(net)
    with pytest.raises(ValueError, match="must be called in every invoke"):
        with model.trace() as tracer:
            with tracer.invoke(torch.randn(1, 8)):
                model[4].skip(torch.zeros(1, 8))
            with tracer.invoke(torch.randn(1, 8)):
                out = model.output.save()


# ------------------------------------------------------------------ barrier


def test_barrier_shares_a_value_at_the_same_module(gpt2):
    prompts = ["Hello world", "The Eiffel Tower is in"]
    with gpt2.trace() as tracer:
        barrier = tracer.barrier(2)
        with tracer.invoke(prompts[0]):
            clean_hs = gpt2.transformer.h[1].output[0]
            barrier()
        with tracer.invoke(prompts[1]):
            barrier()
            gpt2.transformer.h[1].output[0] = clean_hs
            patched = gpt2.lm_head.output.save()

    def copy_row(module, args, output):
        output[1] = output[0]
        return output

    enc = gpt2.tokenizer(prompts, return_tensors="pt", padding=True)
    handle = gpt2._module.transformer.h[1].register_forward_hook(copy_row)
    try:
        positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # padded rows count from their first token
        with torch.no_grad():
            expected = gpt2._module(**enc, position_ids=positions).logits
    finally:
        handle.remove()
    assert torch.allclose(patched, expected[1:], atol=1e-5)


def test_without_barrier_the_value_is_not_there_yet(gpt2):
    with pytest.raises(NameError, match="clean_hs"):
        with gpt2.trace() as tracer:
            with tracer.invoke("Hello world"):
                clean_hs = gpt2.transformer.h[1].output[0]
            with tracer.invoke("The Eiffel Tower is in"):
                gpt2.transformer.h[1].output[0] = clean_hs


def test_barrier_releases_an_earlier_invoke_at_the_current_module(net):
    # The first invoke waits; the second arrives while layer 2's output is being provided; the
    # first then swaps layer 2's output for its own rows (it comes earlier in invoke order).
    model = NNsight(net)
    a, b = torch.randn(1, 8), torch.randn(1, 8)
    with model.trace() as tracer:
        barrier = tracer.barrier(2)
        with tracer.invoke(a):
            barrier()
            model[2].output = donor * 10
            out_a = model.output.save()
        with tracer.invoke(b):
            donor = model[2].output.clone()
            barrier()
            out_b = model.output.save()
    assert torch.allclose(out_a, net[3:](net[:3](b) * 10))
    assert torch.allclose(out_b, net(b))


def test_barrier_with_three_participants_and_reuse(net):
    model = NNsight(net)
    xs = [torch.randn(1, 8) for _ in range(3)]
    with model.trace() as tracer:
        barrier = tracer.barrier(3)
        with tracer.invoke(xs[0]):
            first = model[0].output.clone()
            barrier()
            barrier()
            model[6].output = model[6].output + third
            out0 = model.output.save()
        with tracer.invoke(xs[1]):
            barrier()
            model[0].output[:] = first
            barrier()
            out1 = model.output.save()
        with tracer.invoke(xs[2]):
            barrier()
            third = model[6].output.clone()
            barrier()
    assert torch.allclose(out1, net(xs[0]))
    h6_0 = net[:7](xs[0])
    assert torch.allclose(out0, net[7:](h6_0 + net[:7](xs[2])))


def test_barrier_that_never_fills_names_itself(net):
    model = NNsight(net)
    with pytest.raises(ValueError, match=r"barrier\(2\) was never released: only 1 of 2"):
        with model.trace() as tracer:
            barrier = tracer.barrier(2)
            with tracer.invoke(torch.randn(1, 8)):
                h = model[0].output
                barrier()
                out = model.output.save()
            with tracer.invoke(torch.randn(1, 8)):
                out2 = model.output.save()


def test_barrier_outside_an_invoke_is_an_error(net):
    model = NNsight(net)
    with pytest.raises(ValueError, match="inside an invoke"):
        with model.trace() as tracer:
            barrier = tracer.barrier(1)
            barrier()
            with tracer.invoke(torch.randn(1, 8)):
                pass
