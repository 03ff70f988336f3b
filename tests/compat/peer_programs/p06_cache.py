# tracer.cache() of every module and of named ones.
import torch
from nnsight import LanguageModel
from _common import GPT2, first, num, emit

model = LanguageModel(GPT2, dispatch=True)
with model.trace("Hello world") as tracer:
    cache = tracer.cache()
with model.trace("Hello world") as tracer:
    some = tracer.cache(modules=[model.transformer.h[0], model.transformer.h[1].mlp])
    logits = model.lm_head.output.save()
h0 = first(cache["model.transformer.h.0"].output)
mlp = some["model.transformer.h.1.mlp"].output
assert torch.allclose(first(cache.model.transformer.h[0].output), h0)
assert torch.allclose(first(some["model.transformer.h.0"].output), h0)
emit(n_all=len(cache.keys()), keys=sorted(some.keys()), h0=num(h0[0, -1, :5]), mlp=list(mlp.shape))
