"""Traced generation when Hugging Face expands the batch: `num_return_sequences > 1` (sampling)
and beam search (`num_beams > 1`).

HF runs every prompt as k = max(num_beams, num_return_sequences) contiguous rows while decoding and
returns num_return_sequences rows per prompt. Each invoke sees its own prompts' rows of both (the
peer nnsight 0.8.1 gives every invoke the whole expanded batch: a deliberate difference), writes
only touch those rows, and the tokens are exactly plain HF generate's — checked against HF
generate with plain torch forward hooks, same seed."""
import pytest
import torch

from feature_utils import layers

PROMPTS = ["Hello world", "The Eiffel Tower is in"]  # different lengths: the first is left-padded
STEPS = 3
MODES = {  # name: (generate options, rows per prompt while decoding, rows per prompt returned)
    "sample-return-2": (dict(do_sample=True, num_return_sequences=2), 2, 2),
    "beams-3": (dict(do_sample=False, num_beams=3), 3, 1),
    "beams-3-return-2": (dict(do_sample=False, num_beams=3, num_return_sequences=2), 3, 2),
}


def reference(model, module, options, hook=None):
    """Plain HF generate of both prompts (seed 0) with a forward hook on `module`:
    (tokens, [module output per call])."""
    calls = []

    def capture(mod, args, output):
        if hook is not None:
            hook(output)
        calls.append(output.detach().clone())

    handle = module.register_forward_hook(capture)
    try:
        enc = model.tokenizer(PROMPTS, return_tensors="pt", padding=True)
        torch.manual_seed(0)
        with torch.no_grad():
            tokens = model._module.generate(**enc, max_new_tokens=STEPS, **options)
    finally:
        handle.remove()
    return tokens, calls


@pytest.mark.parametrize("mode", list(MODES))
def test_each_invoke_sees_its_own_expanded_rows(lm, mode):
    kind, model = lm
    options, k, r = MODES[mode]
    torch.manual_seed(0)
    with model.generate(max_new_tokens=STEPS, **options) as tracer:
        with tracer.invoke(PROMPTS[0]):
            first = list().save()
            for step in tracer.iter[:]:
                first.append(model.lm_head.output.clone())
            first_generated = model.generator.output.save()
            first_result = tracer.result.save()
        with tracer.invoke(PROMPTS[1]):
            second = list().save()
            for step in tracer.iter[:]:
                second.append(model.lm_head.output.clone())
            second_result = tracer.result.save()
        with tracer.invoke():  # no input: the whole expanded batch
            whole_logits = model.lm_head.output.save()
            whole = tracer.result.save()
    tokens, calls = reference(model, model._module.lm_head, options)

    assert tokens.shape[0] == 2 * r
    assert torch.equal(tracer.result, tokens) and torch.equal(whole, tokens)
    assert torch.equal(first_result, tokens[:r]) and torch.equal(first_generated, tokens[:r])
    assert torch.equal(second_result, tokens[r:])
    assert len(first) == len(second) == len(calls) == STEPS
    assert torch.equal(whole_logits, calls[0])
    for mine, theirs, hf in zip(first, second, calls):
        assert hf.shape[0] == 2 * k
        assert torch.equal(mine, hf[:k]) and torch.equal(theirs, hf[k:])


def _force(logits, token):
    logits[:, -1, :] = -1e4
    logits[:, -1, token] = 1e4


@pytest.mark.parametrize("mode", list(MODES))
def test_a_write_changes_only_its_invokes_rows(gpt2, mode):
    options, k, r = MODES[mode]
    forced = 7
    shift = torch.linspace(-8, 8, gpt2._module.config.n_embd)
    torch.manual_seed(0)
    with gpt2.generate(max_new_tokens=STEPS, **options) as tracer:
        with tracer.invoke(PROMPTS[0]):
            for step in tracer.all():
                _force(gpt2.lm_head.output, forced)
            first = tracer.result.save()
        with tracer.invoke(PROMPTS[1]):
            for step in tracer.all():
                gpt2.transformer.h[1].output[:, -1, :] += shift  # a hidden-state edit of the other prompt
            second = tracer.result.save()

    def hook(output):  # the same edits by row ranges, on plain HF
        if output.shape[-1] == gpt2._module.config.vocab_size:
            _force(output[:k], forced)

    def hidden(mod, args, output):
        output[k:, -1, :] += shift

    handle = gpt2._module.transformer.h[1].register_forward_hook(hidden)
    try:
        expected, _ = reference(gpt2, gpt2._module.lm_head, options, hook)
    finally:
        handle.remove()
    clean, _ = reference(gpt2, gpt2._module.lm_head, options)
    assert torch.equal(torch.cat([first, second]), expected)
    assert (first[0, -STEPS:] == forced).all()  # the best sequence (beams: the others score -1e4)
    assert not torch.equal(second, clean[r:])  # the edit mattered ...
    assert not (second[:, -STEPS:] == forced).any()  # ... and the other invoke's write didn't leak


def test_streamer_and_cache_per_invoke_with_return_sequences(gpt2):
    options, k, r = MODES["sample-return-2"]
    torch.manual_seed(0)
    with gpt2.generate(max_new_tokens=STEPS, **options) as tracer:
        with tracer.invoke(PROMPTS[0]):
            cache = tracer.cache(modules=[gpt2.transformer.h[0]])
            streamed = list().save()
            for step in tracer.iter[:]:
                streamed.append(gpt2.generator.streamer.output)
        with tracer.invoke(PROMPTS[1]):
            pass
    tokens, calls = reference(gpt2, gpt2._module.transformer.h[0], options)
    assert [int(t.shape[0]) for t in streamed] == [k] * STEPS
    assert torch.equal(torch.stack(streamed, dim=1), tokens[:k, -STEPS:])
    cached = cache["model.transformer.h.0"].output
    assert len(cached) == STEPS
    for mine, hf in zip(cached, calls):
        assert torch.equal(mine, hf[:k])


def test_beam_search_without_invokes_is_plain_hf(llama):
    options, k, r = MODES["beams-3-return-2"]
    with llama.generate(PROMPTS, max_new_tokens=STEPS, **options) as tracer:
        logits = llama.lm_head.output.save()
    tokens, calls = reference(llama, llama._module.lm_head, options)
    assert torch.equal(tracer.result, tokens)
    assert torch.equal(logits, calls[0]) and logits.shape[0] == 2 * k
    assert torch.equal(llama.generate(PROMPTS, max_new_tokens=STEPS, **options), tokens)  # no tracing


def test_left_padded_prompts_decode_exactly_like_hf(lm):
    # HF generate reads the model's forward signature to build position ids and the attention mask
    # of left-padded prompts: the traced call must show it the model's own, not the hook wrapper's.
    kind, model = lm
    with model.generate(PROMPTS, max_new_tokens=4) as tracer:
        logits = list().save()
        for step in tracer.iter[:]:
            logits.append(model.lm_head.output[:, -1])
    enc = model.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        ref = model._module.generate(**enc, max_new_tokens=4, do_sample=False,
                                     output_logits=True, return_dict_in_generate=True)
    assert torch.equal(tracer.result, ref.sequences)
    assert len(logits) == len(ref.logits) == 4
    for mine, theirs in zip(logits, ref.logits):
        assert torch.equal(mine, theirs)
