# Gradients: with loss.backward(): read .grad of an activation.
import torch
from nnsight import LanguageModel
from _common import GPT2, hf, num, emit

model = LanguageModel(GPT2, dispatch=True)
with model.trace("Hello world"):
    hs = model.transformer.h[-1].output
    logits = model.lm_head.output
    loss = logits.sum()
    with loss.backward():
        grad = hs.grad.save()
ref, tok = hf(GPT2)
store = {}
def keep(m, i, o):
    o.retain_grad(); store["h"] = o
ref.transformer.h[-1].register_forward_hook(keep)
ref(**tok("Hello world", return_tensors="pt")).logits.sum().backward()
assert torch.allclose(grad, store["h"].grad, atol=1e-4)
emit(shape=list(grad.shape), g=num(grad[0, -1, :5]))
