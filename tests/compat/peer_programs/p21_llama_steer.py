# Llama: add a steering vector to a layer's output at the last token.
import torch
from nnsight import LanguageModel
from _common import LLAMA, hf, first, num, emit

model = LanguageModel(LLAMA, dispatch=True)
vec = torch.ones(64) * 0.5
with model.trace("The capital of France is"):
    out = model.model.layers[0].output
    h = first(out)
    h[:, -1, :] += vec
    logits = model.lm_head.output.save()
ref, tok = hf(LLAMA)
def add(m, i, o):
    h = first(o); h[:, -1, :] += vec
ref.model.layers[0].register_forward_hook(add)
with torch.no_grad():
    expect = ref(**tok("The capital of France is", return_tensors="pt")).logits
assert torch.allclose(logits, expect, atol=1e-4)
emit(v=num(logits[0, -1, :5]))
