# Calling a module inside a trace (logit lens) and envoy.next() are plain ops.
import torch
import nnsight
from nnsight import LanguageModel
from _common import GPT2, hf, num, emit

model = LanguageModel(GPT2, dispatch=True)
with model.trace("The capital of France is"):
    lens = []
    for layer in model.transformer.h:
        lens.append(model.lm_head(model.transformer.ln_f(layer.output[0]))[0, -1].argmax().item())
    lens = nnsight.save(lens)
    final = model.lm_head.output[0, -1].argmax().item()
    final = nnsight.save(final)
emit(lens=lens, final=final)
