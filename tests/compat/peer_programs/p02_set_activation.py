# Setting an activation in place with [:] = 0 and by assignment.
import torch
from nnsight import LanguageModel
from _common import GPT2, hf, num, emit

model = LanguageModel(GPT2, dispatch=True)
with model.trace("Hello world"):
    model.transformer.h[0].output[0][:] = 0
    zeroed = model.transformer.h[0].output[0].save()
    logits_a = model.lm_head.output.save()
with model.trace("Hello world"):
    model.transformer.h[1].mlp.output = model.transformer.h[1].mlp.output * 0
    logits_b = model.lm_head.output.save()
ref, tok = hf(GPT2)
ids = tok("Hello world", return_tensors="pt")
hook = ref.transformer.h[1].mlp.register_forward_hook(lambda m, i, o: o * 0)
with torch.no_grad():
    expect_b = ref(**ids).logits
hook.remove()
assert float(zeroed.abs().sum()) == 0.0
assert torch.allclose(logits_b, expect_b, atol=1e-4)
emit(a=num(logits_a[0, -1, :6]), b=num(logits_b[0, -1, :6]))
