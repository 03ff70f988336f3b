# Setting a module's input; reading it back in the same trace.
import torch
from nnsight import LanguageModel
from _common import GPT2, hf, num, emit

model = LanguageModel(GPT2, dispatch=True)
with model.trace("Hello world"):
    x = model.transformer.ln_f.input
    model.transformer.ln_f.input = x * 2
    seen = model.transformer.ln_f.input.save()
    logits = model.lm_head.output.save()
ref, tok = hf(GPT2)
ref.transformer.ln_f.register_forward_pre_hook(lambda m, args: (args[0] * 2,))
with torch.no_grad():
    expect = ref(**tok("Hello world", return_tensors="pt")).logits
assert torch.allclose(logits, expect, atol=1e-4)
emit(v=num(logits[0, -1, :5]), seen=list(seen.shape))
