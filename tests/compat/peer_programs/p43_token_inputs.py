# Token ids as input: a tensor, a list of id lists of different lengths, a dict with a mask.
import torch
from nnsight import LanguageModel
from _common import GPT2, hf, emit

model = LanguageModel(GPT2, dispatch=True)
ref, tok = hf(GPT2)
a = tok("Hello world")["input_ids"]
b = tok("The capital of France is")["input_ids"]
with model.trace(torch.tensor([b])):
    t = model.lm_head.output.save()
with model.trace([a, b]):
    l = model.lm_head.output.save()
with model.trace({"input_ids": torch.tensor([b]), "attention_mask": torch.ones(1, len(b), dtype=torch.long)}):
    d = model.lm_head.output.save()
with torch.no_grad():
    ra = ref(torch.tensor([a])).logits
    rb = ref(torch.tensor([b])).logits
assert torch.allclose(t, rb, atol=1e-4) and torch.allclose(d, rb, atol=1e-4)
assert torch.allclose(l[1], rb[0], atol=1e-4)
assert torch.allclose(l[0, -1], ra[0, -1], atol=1e-4)
emit(t=list(t.shape), l=list(l.shape), d=list(d.shape))
