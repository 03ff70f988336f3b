# A session: a value saved in one trace is used in a later one, and in Python between them.
import torch
from nnsight import LanguageModel
from _common import GPT2, num, emit

model = LanguageModel(GPT2, dispatch=True)
with model.session() as session:
    with model.trace("The capital of France is"):
        mean = model.transformer.h[0].output.mean(dim=1).save()
    direction = mean / mean.norm()
    with model.trace("Hello world"):
        model.transformer.h[0].output[:] += direction
        logits = model.lm_head.output.save()
with model.trace("The capital of France is"):
    m2 = model.transformer.h[0].output.mean(dim=1).save()
with model.trace("Hello world"):
    model.transformer.h[0].output[:] += m2 / m2.norm()
    l2 = model.lm_head.output.save()
emit(v=num(logits[0, -1, :5]), same=bool(torch.allclose(logits, l2)))
