# Activation patching: one invoke saves, the other writes (same length prompts; GPT-2's blocks return a tensor here).
import torch
from nnsight import LanguageModel
from _common import GPT2, num, emit

model = LanguageModel(GPT2, dispatch=True)
with model.trace() as tracer:
    with tracer.invoke("The capital of France is"):
        clean = model.transformer.h[2].output.save()
    with tracer.invoke("The capital of Italy is"):
        # ask for the module first: `clean` exists once the first invoke has had this module
        hidden = model.transformer.h[2].output
        hidden[:] = clean
        patched = model.lm_head.output.save()
with model.trace("The capital of France is"):
    alone = model.lm_head.output.save()
assert torch.allclose(patched, alone, atol=1e-4)
emit(patched=num(patched[0, -1, :6]), shape=list(patched.shape))
