# A list of prompts of different lengths in one trace: each row equals its own run.
import torch
from nnsight import LanguageModel
from _common import GPT2, hf, emit

model = LanguageModel(GPT2, dispatch=True)
prompts = ["Hi", "The Eiffel Tower is in the city of"]
with model.trace(prompts):
    logits = model.lm_head.output.save()
ref, tok = hf(GPT2)
lasts = []
for row, p in enumerate(prompts):
    with torch.no_grad():
        r = ref(**tok(p, return_tensors="pt")).logits
    assert torch.allclose(logits[row, -1], r[0, -1], atol=1e-4), p
    lasts.append(int(logits[row, -1].argmax()))
emit(shape=list(logits.shape), argmax=lasts)
