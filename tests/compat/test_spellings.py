"""Both generations of iteration and result spellings work and give plain Hugging Face's numbers:
the design's (`with tracer.iter[...]`, `model.generator.output`) and nnsight 0.8's (`for step in
tracer.iter[...]`, `tracer.result`, `model.iter[...]`, `model.all()`). Only the spellings the design
does not use (`model.iter`, `model.all()`) warn, with NNsightDeprecationWarning.
"""
import warnings

import transformers  # noqa: F401  (import before nnsight mounts `.save`)
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from nnsight import LanguageModel
from nnsight.deprecation import NNsightDeprecationWarning

torch.set_num_threads(1)

PROMPT = "The capital of France is"
STEPS = 3


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def lm(request):
    path = request.getfixturevalue(f"{request.param}_path")
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    model = LanguageModel(path, dispatch=True)
    with torch.no_grad():
        out = hf.generate(**tok(PROMPT, return_tensors="pt"), max_new_tokens=STEPS, do_sample=False,
                          output_logits=True, return_dict_in_generate=True)
    return model, out.sequences, torch.stack(out.logits)  # logits: (steps, batch, vocab)


def _deprecations(caught):
    return [w for w in caught if issubclass(w.category, NNsightDeprecationWarning)]


def _run(model, spelling):
    """Each step's last-position logits, read through one spelling of the step loop."""
    with model.generate(PROMPT, max_new_tokens=STEPS, do_sample=False) as tracer:
        steps = list().save()
        if spelling == "for tracer.iter":
            for step in tracer.iter[0:STEPS]:
                steps.append(model.lm_head.output[:, -1])
        elif spelling == "with tracer.iter":
            with tracer.iter[0:STEPS]:
                steps.append(model.lm_head.output[:, -1])
        elif spelling == "for tracer.all":
            for step in tracer.all():
                steps.append(model.lm_head.output[:, -1])
        elif spelling == "with tracer.all":
            with tracer.all():
                steps.append(model.lm_head.output[:, -1])
        elif spelling == "for model.iter":
            for step in model.iter[0:STEPS]:
                steps.append(model.lm_head.output[:, -1])
        elif spelling == "for model.iter unbounded":
            for step in model.iter[:]:
                steps.append(model.lm_head.output[:, -1])
        elif spelling == "for model.all":
            for step in model.all():
                steps.append(model.lm_head.output[:, -1])
        elif spelling == "for envoy.iter unbounded":  # 0.8.1 has iter/all on every envoy
            for step in model.lm_head.iter[:]:
                steps.append(model.lm_head.output[:, -1])
        elif spelling == "for envoy.all":
            for step in model.transformer.h[0].all() if hasattr(model, "transformer") \
                    else model.model.layers[0].all():
                steps.append(model.lm_head.output[:, -1])
        elif spelling == "with model.all":
            with model.all():
                steps.append(model.lm_head.output[:, -1])
        after = model.lm_head.output[:, -1].save()  # the code after the loop runs, on the last step
    return torch.stack(list(steps)), after


DESIGN = ["for tracer.iter", "with tracer.iter", "for tracer.all", "with tracer.all"]
OLD = ["for model.iter", "for model.iter unbounded", "for model.all", "with model.all",
       "for envoy.iter unbounded", "for envoy.all"]


@pytest.mark.parametrize("spelling", DESIGN + OLD)
def test_every_step_spelling_gives_hf_logits(lm, spelling):
    model, _, logits = lm
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        steps, after = _run(model, spelling)
    assert steps.shape[0] == STEPS
    assert torch.allclose(steps, logits, atol=1e-4)
    assert torch.allclose(after, logits[-1], atol=1e-4)
    deprecations = _deprecations(caught)
    if spelling in DESIGN:
        assert deprecations == []
    else:
        assert deprecations and "tracer." in str(deprecations[0].message)
        assert deprecations[0].filename == __file__  # points at the user's line


def test_result_spellings_give_hf_tokens_without_warnings(lm):
    model, sequences, _ = lm
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with model.generate(PROMPT, max_new_tokens=STEPS, do_sample=False) as tracer:
            for step in tracer.iter[:]:
                pass
            generated = model.generator.output.save()  # the design (provided before the result)
            result = tracer.result.save()  # nnsight 0.8 and the design
    assert torch.equal(result, sequences) and torch.equal(generated, sequences)
    assert _deprecations(caught) == []
