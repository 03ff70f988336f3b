# Several gradients in one backward, read in backward order; a loss from the model's output.
import torch
from nnsight import LanguageModel
from _common import GPT2, hf, num, emit

model = LanguageModel(GPT2, dispatch=True)
ids = model.tokenizer("Hello world", return_tensors="pt")["input_ids"]
with model.trace(ids, labels=ids):
    h1 = model.transformer.h[1].output
    h3 = model.transformer.h[3].output
    loss = model.output.loss
    with loss.backward():
        g3 = h3.grad.save()
        g1 = h1.grad.save()
ref, tok = hf(GPT2)
store = {}
for i in (1, 3):
    def keep(m, inp, o, i=i):
        o.retain_grad(); store[i] = o
    ref.transformer.h[i].register_forward_hook(keep)
ref(ids, labels=ids).loss.backward()
assert torch.allclose(g1, store[1].grad, atol=1e-5) and torch.allclose(g3, store[3].grad, atol=1e-5)
emit(g1=num(g1[0, -1, :4], 5), g3=num(g3[0, -1, :4], 5))
