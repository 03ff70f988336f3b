# tracer.barrier: share a value between invokes at the same module.
import torch
from nnsight import LanguageModel
from _common import GPT2, emit

model = LanguageModel(GPT2, dispatch=True)
with model.trace() as tracer:
    barrier = tracer.barrier(2)
    with tracer.invoke("The capital of France is"):
        emb = model.transformer.wte.output
        barrier()
    with tracer.invoke("The capital of Italy is"):
        barrier()
        model.transformer.wte.output = emb
        patched = model.lm_head.output.save()
with model.trace("The capital of France is"):
    alone = model.lm_head.output.save()
emit(same=bool(torch.allclose(patched, alone, atol=1e-4)))
