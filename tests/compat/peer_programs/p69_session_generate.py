# A session mixing a generation and a trace: the generated tokens feed the next trace (Llama).
import torch
from nnsight import LanguageModel
from _common import LLAMA, hf, emit

model = LanguageModel(LLAMA, dispatch=True)
with model.session():
    with model.generate("The capital of France is", max_new_tokens=3) as tracer:
        tokens = tracer.result.save()
    with model.trace(tokens):
        logits = model.lm_head.output.save()
ref, tok = hf(LLAMA)
with torch.no_grad():
    gen = ref.generate(**tok("The capital of France is", return_tensors="pt"), max_new_tokens=3, do_sample=False)
    expect = ref(gen).logits
assert tokens.tolist() == gen.tolist()
assert torch.allclose(logits, expect, atol=1e-4)
emit(tokens=tokens.tolist(), shape=list(logits.shape))
