"""An edit replays on every later trace of the edited model, in both spellings (this one's and nnsight 0.8's).

The reference is plain Hugging Face with a forward hook doing what the edit does.
"""
import transformers  # noqa: F401  (import before nnsight mounts `.save`)
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from nnsight import LanguageModel
from nnsight.deprecation import NNsightDeprecationWarning

torch.set_num_threads(1)

# Same token count: padded batches are another matter (issue: left padding and position_ids).
PROMPTS = ["The capital of France is", "The capital of Japan is"]


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def setup(request):
    path = request.getfixturevalue(f"{request.param}_path")
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    model = LanguageModel(path, dispatch=True)
    mlp = "transformer.h.1.mlp" if request.param == "gpt2" else "model.layers.0.mlp"
    return request.param, hf, tok, model, mlp


def _envoy(model, dotted):
    for part in dotted.split("."):
        model = model[int(part)] if part.isdigit() else getattr(model, part)
    return model


def _hf_logits(hf, tok, prompt, mlp=None):
    """Plain HF logits of one prompt, with `mlp`'s output zeroed when given."""
    handle = None
    if mlp is not None:
        handle = hf.get_submodule(mlp).register_forward_hook(lambda m, i, o: torch.zeros_like(o))
    try:
        with torch.no_grad():
            return hf(**tok(prompt, return_tensors="pt")).logits
    finally:
        if handle is not None:
            handle.remove()


def test_edit_replays_on_every_later_trace_and_leaves_the_original(setup):
    _, hf, tok, model, mlp = setup
    with model.edit() as edited:
        _envoy(model, mlp).output[:] = 0
    for _ in range(3):  # every later trace, not only the first
        with edited.trace(PROMPTS[0]):
            logits = edited.lm_head.output.save()
        assert torch.allclose(logits, _hf_logits(hf, tok, PROMPTS[0], mlp), atol=1e-5)
    with model.trace(PROMPTS[0]):
        plain = model.lm_head.output.save()
    assert torch.allclose(plain, _hf_logits(hf, tok, PROMPTS[0]), atol=1e-5)
    assert not torch.allclose(plain, logits, atol=1e-3)  # the edit changes the answer


def test_edit_replays_in_every_invoke_and_in_a_trace_made_elsewhere(setup):
    _, hf, tok, model, mlp = setup
    assert len(tok(PROMPTS[0]).input_ids) == len(tok(PROMPTS[1]).input_ids)
    with model.edit() as edited:
        _envoy(model, mlp).output[:] = 0

    def in_another_function(m):
        with m.trace() as tracer:
            with tracer.invoke(PROMPTS[0]):
                first = m.lm_head.output[:, -1].save()
            with tracer.invoke(PROMPTS[1]):
                second = m.lm_head.output[:, -1].save()
        return first, second

    first, second = in_another_function(edited)
    assert torch.allclose(first, _hf_logits(hf, tok, PROMPTS[0], mlp)[:, -1], atol=1e-5)
    assert torch.allclose(second, _hf_logits(hf, tok, PROMPTS[1], mlp)[:, -1], atol=1e-5)


def test_edit_replays_in_generation(setup):
    _, hf, tok, model, mlp = setup
    with model.edit() as edited:
        _envoy(model, mlp).output[:] = 0
    handle = hf.get_submodule(mlp).register_forward_hook(lambda m, i, o: torch.zeros_like(o))
    try:
        ids = tok(PROMPTS[0], return_tensors="pt")
        expected = hf.generate(**ids, max_new_tokens=1, do_sample=False)
    finally:
        handle.remove()
    with edited.generate(PROMPTS[0], max_new_tokens=1, do_sample=False) as tracer:
        tokens = tracer.result.save()
    assert torch.equal(tokens, expected)


def test_the_08_spelling_binds_tracer_and_edited_model_with_a_deprecation_warning(setup):
    _, hf, tok, model, mlp = setup
    with pytest.warns(NNsightDeprecationWarning, match=r"as \(tracer, edited\)"):
        with model.edit() as (tracer, edited):
            _envoy(edited, mlp).output[:] = 0
    assert edited is not model and type(edited) is type(model)
    assert hasattr(tracer, "ir")  # the edit's tracer
    for _ in range(2):
        with edited.trace(PROMPTS[1]):
            logits = edited.lm_head.output.save()
        assert torch.allclose(logits, _hf_logits(hf, tok, PROMPTS[1], mlp), atol=1e-5)
    with model.trace(PROMPTS[1]):
        plain = model.lm_head.output.save()
    assert torch.allclose(plain, _hf_logits(hf, tok, PROMPTS[1]), atol=1e-5)


def test_inplace_edit_made_in_a_function_replays_until_cleared(setup):
    _, hf, tok, model, mlp = setup

    def make_edit():
        with model.edit(inplace=True) as (tracer, same):
            _envoy(model, mlp).output[:] = 0
        return same

    with pytest.warns(NNsightDeprecationWarning):
        assert make_edit() is model
    try:
        for _ in range(2):
            with model.trace(PROMPTS[0]):
                logits = model.lm_head.output.save()
            assert torch.allclose(logits, _hf_logits(hf, tok, PROMPTS[0], mlp), atol=1e-5)
    finally:
        model.clear_edits()
    with model.trace(PROMPTS[0]):
        logits = model.lm_head.output.save()
    assert torch.allclose(logits, _hf_logits(hf, tok, PROMPTS[0]), atol=1e-5)
