# tracer.invoke in a loop: each invoke sees its own loop value.
import torch
from nnsight import LanguageModel
from _common import GPT2, emit

model = LanguageModel(GPT2, dispatch=True)
prompts = ["The capital of France is", "Hello world", "Big Ben is in"]
with model.trace() as tracer:
    seen = list().save()
    for i, p in enumerate(prompts):
        with tracer.invoke(p):
            seen.append((i, model.lm_head.output.shape[1]))
emit(seen=sorted([list(s) for s in seen]))
