# with model.session(): values flow from one trace to the next (GPT-2 blocks return a tensor).
import torch
from nnsight import LanguageModel
from _common import GPT2, num, emit

model = LanguageModel(GPT2, dispatch=True)
with model.session() as session:
    with model.trace("The capital of France is"):
        h = model.transformer.h[1].output[:, -1, :]
    with model.trace("The capital of Italy is"):
        model.transformer.h[1].output[:, -1, :] = h
        patched = model.lm_head.output.save()
emit(shape=list(patched.shape), v=num(patched[0, -1, :5]))
