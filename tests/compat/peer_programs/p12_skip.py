# envoy.skip(value): the module does not run, the value takes its place.
import torch
from nnsight import LanguageModel
from _common import GPT2, hf, num, emit

model = LanguageModel(GPT2, dispatch=True)
with model.trace("Hello world"):
    inp = model.transformer.h[1].input
    model.transformer.h[1].skip(inp)
    out = model.transformer.h[1].output.save()
    logits = model.lm_head.output.save()
with model.trace("Hello world"):
    before = model.transformer.h[1].input.save()
assert torch.allclose(out, before)
emit(v=num(logits[0, -1, :5]))
