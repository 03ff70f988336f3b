# tracer.cache with include_inputs, dtype and module names; entries as attributes.
import torch
from nnsight import LanguageModel
from _common import GPT2, num, emit

model = LanguageModel(GPT2, dispatch=True)
with model.trace("Hello world") as tracer:
    cache = tracer.cache(modules=["model.transformer.h.0.mlp", model.lm_head], include_inputs=True,
                         dtype=torch.float16)
    mlp_in = model.transformer.h[0].mlp.input.save()
entry = cache["model.transformer.h.0.mlp"]
args = entry.inputs[0]
assert torch.allclose(args[0].float(), mlp_in, atol=1e-2)
emit(keys=sorted(cache.keys()), dtype=str(entry.output.dtype), in_dtype=str(args[0].dtype),
     lm=list(cache.model.lm_head.output.shape))
