# Saved values are plain torch tensors / Python values after the trace.
import torch
import nnsight
from nnsight import LanguageModel
from _common import GPT2, emit

model = LanguageModel(GPT2, dispatch=True)
with model.trace("Hello world"):
    d = nnsight.save({"n": model.transformer.h[0].output.shape[1]})
    t = model.lm_head.output.save()
    i = nnsight.save(model.lm_head.output.argmax().item())
    s = nnsight.save(str(model.lm_head.output.shape))
emit(t=type(t).__name__, is_tensor=isinstance(t, torch.Tensor), i=type(i).__name__, s=s, d=d,
     grad=t.requires_grad)
