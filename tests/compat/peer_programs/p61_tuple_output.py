# Replacing a tuple output (attention returns (hidden, weights)) with a new tuple.
import torch
from nnsight import LanguageModel
from _common import GPT2, hf, num, emit

model = LanguageModel(GPT2, dispatch=True)
with model.trace("Hello world"):
    out = model.transformer.h[0].attn.output
    model.transformer.h[0].attn.output = (out[0] * 0.5,) + tuple(out[1:])
    logits = model.lm_head.output.save()
ref, tok = hf(GPT2)
ref.transformer.h[0].attn.register_forward_hook(lambda m, i, o: (o[0] * 0.5,) + tuple(o[1:]))
with torch.no_grad():
    expect = ref(**tok("Hello world", return_tensors="pt")).logits
assert torch.allclose(logits, expect, atol=1e-4)
emit(v=num(logits[0, -1, :5]))
