"""Padded batches: each row of a batch of different-length prompts equals its own single run.

Left-padded rows need their own position ids (GPT-2's learned absolute positions, Llama's rotary
ones); without them the short row's logits are silently wrong.
"""
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from nnsight import LanguageModel

PROMPTS = ["Hi", "The Eiffel Tower is in the city of"]


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def paths(request, gpt2_path, llama_path):
    return gpt2_path if request.param == "gpt2" else llama_path


@pytest.fixture(scope="module")
def model(paths):
    return LanguageModel(paths, dispatch=True)


@pytest.fixture(scope="module")
def hf(paths):
    return AutoModelForCausalLM.from_pretrained(paths).eval(), AutoTokenizer.from_pretrained(paths)


def single_logits(hf, prompt):
    ref, tok = hf
    with torch.no_grad():
        return ref(**tok(prompt, return_tensors="pt")).logits[0]


def test_list_of_prompts_each_row_equals_its_own_run(model, hf):
    with model.trace(PROMPTS):
        logits = model.lm_head.output.save()
    for row, prompt in enumerate(PROMPTS):
        alone = single_logits(hf, prompt)
        torch.testing.assert_close(logits[row, -alone.shape[0]:], alone, rtol=1e-5, atol=1e-5)


def test_two_invokes_of_different_lengths_each_equal_their_own_run(model, hf):
    with model.trace() as tracer:
        with tracer.invoke(PROMPTS[0]):
            short = model.lm_head.output.save()
        with tracer.invoke(PROMPTS[1]):
            long = model.lm_head.output.save()
    for saved, prompt in ((short, PROMPTS[0]), (long, PROMPTS[1])):
        alone = single_logits(hf, prompt)
        torch.testing.assert_close(saved[0, -alone.shape[0]:], alone, rtol=1e-5, atol=1e-5)


def test_token_id_rows_of_different_lengths_are_padded_correctly(model, hf):
    _, tok = hf
    rows = [tok(p)["input_ids"] for p in PROMPTS]
    with model.trace(rows):
        logits = model.lm_head.output.save()
    alone = single_logits(hf, PROMPTS[0])
    torch.testing.assert_close(logits[0, -alone.shape[0]:], alone, rtol=1e-5, atol=1e-5)


def test_generate_with_different_length_invokes_equals_hf_generate_per_row(model, hf):
    ref, tok = hf
    with model.generate(max_new_tokens=4, do_sample=False) as tracer:
        with tracer.invoke(PROMPTS[0]):
            pass
        with tracer.invoke(PROMPTS[1]):
            pass
        with tracer.invoke():  # no input: sees the whole batch
            out = model.generator.output.save()
    for row, prompt in enumerate(PROMPTS):
        enc = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            expected = ref.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.eos_token_id)
        assert out[row, -expected.shape[1]:].tolist() == expected[0].tolist()
