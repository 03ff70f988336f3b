# Two invokes of different lengths: each row equals its own single-prompt run.
import torch
from nnsight import LanguageModel
from _common import LLAMA, hf, emit

model = LanguageModel(LLAMA, dispatch=True)
with model.trace() as tracer:
    with tracer.invoke("Hi"):
        a = model.lm_head.output.save()
    with tracer.invoke("The Eiffel Tower is in the city of"):
        b = model.lm_head.output.save()
    with tracer.invoke():
        both = model.lm_head.output.save()
ref, tok = hf(LLAMA)
with torch.no_grad():
    ra = ref(**tok("Hi", return_tensors="pt")).logits
    rb = ref(**tok("The Eiffel Tower is in the city of", return_tensors="pt")).logits
assert torch.allclose(a[0, -1], ra[0, -1], atol=1e-4)
assert torch.allclose(b[0, -1], rb[0, -1], atol=1e-4)
emit(a=list(a.shape), b=list(b.shape), both=list(both.shape))
