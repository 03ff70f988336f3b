# TransformersModel: trace, generate with tracer.result, .task.
import torch
from nnsight import TransformersModel
from _common import GPT2, hf, emit

model = TransformersModel(GPT2, task="text-generation", dispatch=True)
with model.trace("Hello world"):
    logits = model.lm_head.output.save()
with model.generate("Hello world", max_new_tokens=3) as tracer:
    result = tracer.result.save()
ref, tok = hf(GPT2)
with torch.no_grad():
    expect = ref.generate(**tok("Hello world", return_tensors="pt"), max_new_tokens=3, do_sample=False)
assert result.tolist() == expect.tolist()
emit(shape=list(logits.shape), result=result.tolist())
