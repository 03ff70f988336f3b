# Functions defined and called inside the trace body; augmented assignment on an activation.
import torch
from nnsight import LanguageModel
from _common import GPT2, hf, num, emit

model = LanguageModel(GPT2, dispatch=True)
with model.trace("Hello world"):
    def scale(t, k):
        return t * k
    mlp = model.transformer.h[0].mlp.output
    model.transformer.h[0].mlp.output = scale(mlp, 3)
    model.transformer.h[1].mlp.output[:, -1] *= 0
    logits = model.lm_head.output.save()
ref, tok = hf(GPT2)
ref.transformer.h[0].mlp.register_forward_hook(lambda m, i, o: o * 3)
def zero_last(m, i, o):
    o = o.clone(); o[:, -1] = 0; return o
ref.transformer.h[1].mlp.register_forward_hook(zero_last)
with torch.no_grad():
    expect = ref(**tok("Hello world", return_tensors="pt")).logits
assert torch.allclose(logits, expect, atol=1e-4)
emit(v=num(logits[0, -1, :5]))
