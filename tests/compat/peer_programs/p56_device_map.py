# device_map="auto" (accelerate) loads and traces.
import torch
from nnsight import LanguageModel
from _common import GPT2, hf, emit

model = LanguageModel(GPT2, device_map="auto", dispatch=True)
with model.trace("Hello world"):
    logits = model.lm_head.output.save()
ref, tok = hf(GPT2)
with torch.no_grad():
    expect = ref(**tok("Hello world", return_tensors="pt")).logits
assert torch.allclose(logits.cpu(), expect, atol=1e-4)
emit(shape=list(logits.shape), device=str(logits.device))
