"""Multi-token generation: model.generate as a tracing
context, tracer.iter / all / next, the generator and its streamer, tracer.result — checked
against plain Hugging Face generate and forward hooks."""
import pytest
import torch

import nnsight
from nnsight import MissedProviderError, NNsight

from feature_utils import hf_generate, layers, make_mlp

PROMPT = "The Eiffel Tower is in"


# ------------------------------------------------------------------ generate as a context


def test_greedy_generate_in_a_trace_gives_exactly_hf_tokens(lm):
    kind, model = lm
    with model.generate(PROMPT, max_new_tokens=6) as tracer:
        generated = model.generator.output.save()
        result = tracer.result.save()
    expected = hf_generate(model, [PROMPT], max_new_tokens=6)
    assert torch.equal(result, expected)
    assert torch.equal(generated, expected)


def test_generate_on_a_meta_loaded_model_dispatches_first(gpt2_path, gpt2):
    from nnsight import LanguageModel

    lazy = LanguageModel(gpt2_path)
    assert lazy.device == torch.device("meta")
    with lazy.generate(PROMPT, max_new_tokens=3) as tracer:
        out = tracer.result.save()
    assert lazy.device == torch.device("cpu")
    assert torch.equal(out, hf_generate(gpt2, [PROMPT], max_new_tokens=3))
    assert torch.equal(LanguageModel(gpt2_path).generate(PROMPT, max_new_tokens=3), out)  # plain call too


def test_plain_generate_call_just_generates(gpt2):
    tokens = gpt2.generate(PROMPT, max_new_tokens=4)   # no with-statement: no tracing
    assert torch.equal(tokens, hf_generate(gpt2, [PROMPT], max_new_tokens=4))
    assert gpt2._interleaver.active is False


def test_per_step_logits_equal_hf_scores(lm):
    kind, model = lm
    with model.generate(PROMPT, max_new_tokens=5) as tracer:
        logits = list().save()
        for step in tracer.iter[:]:
            logits.append(model.lm_head.output[:, -1, :])
    enc = model.tokenizer([PROMPT], return_tensors="pt")
    with torch.no_grad():
        ref = model._module.generate(**enc, max_new_tokens=5, do_sample=False,
                                     output_logits=True, return_dict_in_generate=True)
    assert len(logits) == 5
    for got, want in zip(logits, ref.logits):
        assert torch.allclose(got, want, atol=1e-5)


def test_batched_invokes_with_config_only_kwargs(gpt2):
    # max_new_tokens is configuration: the body's invokes are the batch
    with gpt2.generate(max_new_tokens=4) as tracer:
        with tracer.invoke("Hello world"):
            short = tracer.result.save()
        with tracer.invoke(PROMPT):
            long = tracer.result.save()
        with tracer.invoke():
            both = tracer.result.save()
    expected = hf_generate(gpt2, ["Hello world", PROMPT], max_new_tokens=4)
    assert torch.equal(both, expected)
    assert torch.equal(short, expected[:1]) and torch.equal(long, expected[1:])


def test_input_kwarg_makes_an_implicit_invoke(gpt2):
    ids = gpt2.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with gpt2.generate(input_ids=ids, max_new_tokens=3) as tracer:
        out = tracer.result.save()
    assert torch.equal(out, hf_generate(gpt2, [PROMPT], max_new_tokens=3))


def test_input_and_empty_invokes(gpt2):
    # a trace input plus invokes in the body: the input is the batch, the invokes see all of it
    with gpt2.generate(PROMPT, max_new_tokens=3) as tracer:
        with tracer.invoke():
            steps = list().save()
            for step in tracer.iter[:]:
                steps.append(gpt2.lm_head.output[:, -1].argmax(dim=-1))
        with tracer.invoke():
            first = gpt2.output.logits.save()
    tokens = hf_generate(gpt2, [PROMPT], max_new_tokens=3)
    assert torch.equal(torch.cat(steps), tokens[0, -3:])
    # the prompt's forward pass (step 0): HF generate asks the model for the last position's logits only
    assert first.shape[1] == 1
    assert torch.equal(first[:, -1].argmax(dim=-1), tokens[:, -3])


# ------------------------------------------------------------------ iteration selectors


SELECTORS = {
    "all-slice": (slice(None), [0, 1, 2, 3, 4]),
    "range": (slice(1, 3), [1, 2]),
    "int": (2, [2]),
    "list": ([4, 0, 2], [0, 2, 4]),
    "stride": (slice(None, None, 2), [0, 2, 4]),
    "from": (slice(3, None), [3, 4]),
}


@pytest.mark.parametrize("name", list(SELECTORS))
def test_iter_for_loop_selectors(gpt2, name):
    selector, expected_steps = SELECTORS[name]
    with gpt2.generate(PROMPT, max_new_tokens=5) as tracer:
        steps = list().save()
        tokens = list().save()
        for step in tracer.iter[selector]:
            steps.append(step)
            tokens.append(gpt2.lm_head.output[0, -1].argmax())
    generated = hf_generate(gpt2, [PROMPT], max_new_tokens=5)[0, -5:]
    assert steps == expected_steps
    assert [int(t) for t in tokens] == [int(generated[s]) for s in expected_steps]


@pytest.mark.parametrize("name", list(SELECTORS))
def test_iter_with_block_selectors(gpt2, name):
    selector, expected_steps = SELECTORS[name]
    with gpt2.generate(PROMPT, max_new_tokens=5) as tracer:
        steps = list().save()
        tokens = list().save()
        with tracer.iter[selector] as step:
            steps.append(step)
            tokens.append(gpt2.lm_head.output[0, -1].argmax())
    generated = hf_generate(gpt2, [PROMPT], max_new_tokens=5)[0, -5:]
    assert steps == expected_steps
    assert [int(t) for t in tokens] == [int(generated[s]) for s in expected_steps]


def test_all_and_with_block_without_as(gpt2):
    with gpt2.generate(PROMPT, max_new_tokens=4) as tracer:
        a = list().save()
        for step in tracer.all():
            a.append(step)
    with gpt2.generate(PROMPT, max_new_tokens=4) as tracer:
        b = list().save()
        with tracer.all():
            b.append(gpt2.transformer.h[0].output.shape[1])
    prompt_len = len(gpt2.tokenizer(PROMPT)["input_ids"])
    assert a == [0, 1, 2, 3]
    assert b == [prompt_len, 1, 1, 1]  # the prompt's forward, then one token per step


def test_a_second_loop_starts_at_the_cursor(gpt2):
    with gpt2.generate(PROMPT, max_new_tokens=5) as tracer:
        first = list().save()
        second = list().save()
        for step in tracer.iter[:2]:
            first.append(step)
        for step in tracer.all():  # the cursor stayed on step 1
            second.append(step)
    assert first == [0, 1] and second == [1, 2, 3, 4]


def test_next_moves_the_cursor(gpt2):
    with gpt2.generate(PROMPT, max_new_tokens=4) as tracer:
        t0 = gpt2.lm_head.output[0, -1].argmax().save()
        tracer.next()
        t1 = gpt2.lm_head.output[0, -1].argmax().save()
        tracer.next(2)
        t3 = gpt2.lm_head.output[0, -1].argmax().save()
    generated = hf_generate(gpt2, [PROMPT], max_new_tokens=4)[0, -4:]
    assert [int(t0), int(t1), int(t3)] == [int(generated[0]), int(generated[1]), int(generated[3])]


def test_next_past_the_last_step_names_the_step_count(gpt2):
    with pytest.raises(MissedProviderError, match=r"lm_head.output.i3.*ran `model.lm_head.output` 3 time"):
        with gpt2.generate(PROMPT, max_new_tokens=3) as tracer:
            tracer.next(3)
            late = gpt2.lm_head.output.save()


def test_iter_rejects_negative_steps(gpt2):
    with pytest.raises(ValueError, match="negative"):
        with gpt2.generate(PROMPT, max_new_tokens=2) as tracer:
            for step in tracer.iter[-1]:
                pass


# ------------------------------------------------------------------ interventions per step


def _force(logits, token):
    logits[:, -1, :] = -1e4
    logits[:, -1, token] = 1e4


def test_conditional_step_intervention_matches_a_hook_edit(lm):
    kind, model = lm
    forced = 7
    with model.generate(PROMPT, max_new_tokens=5) as tracer:
        for step in tracer.iter[:]:
            if step == 2:
                _force(model.lm_head.output, forced)
        out = tracer.result.save()

    calls = []

    def hook(module, args, output):
        calls.append(1)
        if len(calls) == 3:
            _force(output, forced)
        return output

    handle = model._module.lm_head.register_forward_hook(hook)
    try:
        expected = hf_generate(model, [PROMPT], max_new_tokens=5)
    finally:
        handle.remove()
    clean = hf_generate(model, [PROMPT], max_new_tokens=5)
    assert torch.equal(out, expected)
    assert int(out[0, -3]) == forced
    assert not torch.equal(out, clean)


def test_every_step_hidden_edit_matches_hook(lm):
    kind, model = lm
    with model.generate(PROMPT, max_new_tokens=4) as tracer:
        for step in tracer.all():
            layers(kind, model)[0].output[:, -1, :] *= 3
        out = tracer.result.save()

    def hook(module, args, output):
        output[:, -1, :] *= 3
        return output

    layer = (model._module.transformer.h if kind == "gpt2" else model._module.model.layers)[0]
    handle = layer.register_forward_hook(hook)
    try:
        expected = hf_generate(model, [PROMPT], max_new_tokens=4)
    finally:
        handle.remove()
    assert torch.equal(out, expected)


def test_two_invokes_each_edit_their_own_rows(gpt2):
    with gpt2.generate(max_new_tokens=3) as tracer:
        with tracer.invoke("Hello world"):
            for step in tracer.iter[1]:
                _force(gpt2.lm_head.output, 5)
            a = tracer.result.save()
        with tracer.invoke(PROMPT):
            b = tracer.result.save()
    clean = hf_generate(gpt2, ["Hello world", PROMPT], max_new_tokens=3)
    assert int(a[0, -2]) == 5
    assert torch.equal(a[0, :-2], clean[0, :-2])
    assert torch.equal(b[0, :-1], clean[1, :-1])  # row 2's step 1 token is unchanged


# ------------------------------------------------------------------ the unbounded footgun


def test_code_after_an_unbounded_loop_runs_on_the_last_step(gpt2):
    with gpt2.generate(PROMPT, max_new_tokens=3) as tracer:
        hidden = list().save()
        for step in tracer.iter[:]:
            hidden.append(gpt2.transformer.h[-1].output)
        final_logits = gpt2.output.logits.save()
        last = nnsight.save(step)
    assert len(hidden) == 3 and last == 2
    assert final_logits.shape[1] == 1  # the last decoding step's output


def test_loop_whose_body_reads_nothing_ends(gpt2):
    with gpt2.generate(PROMPT, max_new_tokens=4) as tracer:
        seen = list().save()
        for step in tracer.iter[:]:
            seen.append(step)
        after = tracer.result.save()
    assert seen == [0, 1, 2, 3]
    assert after.shape[1] == len(gpt2.tokenizer(PROMPT)["input_ids"]) + 4


def test_unbounded_loop_on_a_plain_trace_ends_with_the_run(gpt2):
    with gpt2.trace(PROMPT) as tracer:
        seen = list().save()
        for step in tracer.iter[:]:
            seen.append(step)
            out = gpt2.lm_head.output.save()
        result = tracer.result.save()
    assert seen == [0]
    assert torch.equal(result.logits, out)


def test_early_end_of_sequence_ends_the_loop(gpt2):
    eos = gpt2.tokenizer.eos_token_id
    with gpt2.generate(PROMPT, max_new_tokens=6) as tracer:
        seen = list().save()
        for step in tracer.iter[:]:
            seen.append(step)
            if step == 1:
                _force(gpt2.lm_head.output, eos)
        out = tracer.result.save()
    assert seen == [0, 1]
    assert int(out[0, -1]) == eos and out.shape[1] == len(gpt2.tokenizer(PROMPT)["input_ids"]) + 2


def test_default_step_count_from_generation_config(gpt2):
    # no max_new_tokens: transformers' default length, or an explicit max_length
    prompt_len = len(gpt2.tokenizer(PROMPT)["input_ids"])
    with pytest.warns(UserWarning, match="max_length"):
        with gpt2.generate(PROMPT) as tracer:
            seen = list().save()
            for step in tracer.iter[:]:
                seen.append(step)
            out = tracer.result.save()
    assert seen == list(range(out.shape[1] - prompt_len))
    with gpt2.generate(PROMPT, max_length=prompt_len + 3) as tracer:
        seen = list().save()
        for step in tracer.all():
            seen.append(step)
            last = gpt2.lm_head.output.save()
    assert seen == [0, 1, 2] and last.shape[1] == 1


# ------------------------------------------------------------------ generator and streamer


def test_streamer_output_is_each_steps_token(gpt2):
    class Collect:
        def __init__(self):
            self.puts = []
            self.ended = False

        def put(self, value):
            self.puts.append(value.clone())

        def end(self):
            self.ended = True

    user = Collect()
    with gpt2.generate(PROMPT, max_new_tokens=4, streamer=user) as tracer:
        streamed = list().save()
        for step in tracer.iter[:]:
            streamed.append(gpt2.generator.streamer.output)
        out = tracer.result.save()
    assert torch.equal(torch.cat(streamed), out[0, -4:])
    assert len(user.puts) == 5 and user.ended  # the user's streamer still gets the prompt too


def test_generator_output_after_loop_is_read_once(gpt2):
    with gpt2.generate(PROMPT, max_new_tokens=3) as tracer:
        for step in tracer.iter[:]:
            pass
        final = gpt2.generator.output.save()
        result = tracer.result.save()
    assert torch.equal(final, result)


# ------------------------------------------------------------------ any method traces


class Twice(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = make_mlp(depth=2)

    def forward(self, x):
        return self.body(x)

    def run_twice(self, x):
        return self(self(x))


def test_any_module_method_is_a_tracing_context():
    net = Twice()
    model = NNsight(net)
    x = torch.randn(2, 8)
    with model.run_twice(x) as tracer:
        outs = list().save()
        for step in tracer.iter[0:2]:
            outs.append(model.body[0].output)
        result = tracer.result.save()
    assert torch.allclose(outs[0], net.body[0](x))
    assert torch.allclose(outs[1], net.body[0](net(x)))
    assert torch.allclose(result, net.run_twice(x))
    assert torch.allclose(model.run_twice(x), net.run_twice(x))  # plain call
    with model.run_twice(x) as tracer:  # unbounded: ends after the second call of the root
        seen = list().save()
        for step in tracer.all():
            seen.append(step)
            model.body[0].output[:] = 0
        final = tracer.result.save()
    assert seen == [0, 1]
    assert torch.allclose(final, net.body[1:](torch.zeros(2, 8)))
