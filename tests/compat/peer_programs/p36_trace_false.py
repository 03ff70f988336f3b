# model.trace(x, trace=False) runs the model and returns its output.
import torch
from nnsight import LanguageModel
from _common import GPT2, hf, emit

model = LanguageModel(GPT2, dispatch=True)
out = model.trace("Hello world", trace=False)
ref, tok = hf(GPT2)
with torch.no_grad():
    expect = ref(**tok("Hello world", return_tensors="pt")).logits
emit(kind=type(out).__name__, same=bool(torch.allclose(out.logits, expect, atol=1e-4)))
