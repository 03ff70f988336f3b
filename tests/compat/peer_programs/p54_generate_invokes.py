# generate with two invokes of different lengths; per-invoke step loops; tracer.result.
import torch
from nnsight import LanguageModel
from _common import GPT2, hf, emit

model = LanguageModel(GPT2, dispatch=True)
with model.generate(max_new_tokens=3) as tracer:
    with tracer.invoke("Hello"):
        a = list().save()
        for step in tracer.iter[0:3]:
            a.append(model.lm_head.output[0, -1].argmax().item())
    with tracer.invoke("The capital of France is"):
        b = list().save()
        for step in tracer.iter[0:3]:
            b.append(model.lm_head.output[0, -1].argmax().item())
    with tracer.invoke():
        result = tracer.result.save()
ref, tok = hf(GPT2)
with torch.no_grad():
    ga = ref.generate(**tok("Hello", return_tensors="pt"), max_new_tokens=3, do_sample=False)
    gb = ref.generate(**tok("The capital of France is", return_tensors="pt"), max_new_tokens=3, do_sample=False)
assert a == ga[0, -3:].tolist() and b == gb[0, -3:].tolist()
emit(a=a, b=b, shape=list(result.shape))
