# model.output: the HF output object, its .logits; tracer.result of a trace.
import torch
from nnsight import LanguageModel
from _common import GPT2, hf, num, emit

model = LanguageModel(GPT2, dispatch=True)
with model.trace("Hello world") as tracer:
    output = model.output.save()
    logits = model.output.logits.save()
    tokens = model.output.logits.argmax(dim=-1).save()
    result = tracer.result.save()
assert torch.allclose(output.logits, logits)
emit(kind=type(output).__name__, rkind=type(result).__name__, tokens=tokens.tolist(),
     decoded=model.tokenizer.decode(tokens[0]), same=bool(torch.allclose(result.logits, logits)))
