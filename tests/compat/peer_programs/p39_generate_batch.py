# Batched generation of prompts of different lengths: tracer.result per row, as HF generates it.
import torch
from nnsight import LanguageModel
from _common import GPT2, hf, emit

model = LanguageModel(GPT2, dispatch=True)
prompts = ["Hello", "The capital of France is"]
with model.generate(prompts, max_new_tokens=3) as tracer:
    result = tracer.result.save()
ref, tok = hf(GPT2)
new = []
for row, p in enumerate(prompts):
    with torch.no_grad():
        alone = ref.generate(**tok(p, return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert result[row, -3:].tolist() == alone[0, -3:].tolist(), p
    new.append(result[row, -3:].tolist())
emit(shape=list(result.shape), new=new)
