# model.output[0], model.output["logits"], and an invoke with a list of prompts.
import torch
from nnsight import LanguageModel
from _common import GPT2, emit

model = LanguageModel(GPT2, dispatch=True)
with model.trace() as tracer:
    with tracer.invoke(["Hello world", "Hi"]):
        a = model.output[0].save()
        b = model.output["logits"].save()
    with tracer.invoke("The capital of France is"):
        c = model.output.logits.save()
emit(a=list(a.shape), same=bool(torch.equal(a, b)), c=list(c.shape))
