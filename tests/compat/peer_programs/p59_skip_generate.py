# Skipping a block on every generation step with tracer.all().
import torch
from nnsight import LanguageModel
from _common import GPT2, hf, emit

model = LanguageModel(GPT2, dispatch=True)
with model.generate("Hello", max_new_tokens=3) as tracer:
    for step in tracer.iter[0:3]:
        model.transformer.h[2].skip(model.transformer.h[2].input)
    result = tracer.result.save()
ref, tok = hf(GPT2)
ref.transformer.h[2].forward = lambda hidden_states, *a, **k: hidden_states
with torch.no_grad():
    expect = ref.generate(**tok("Hello", return_tensors="pt"), max_new_tokens=3, do_sample=False)
assert result.tolist() == expect.tolist(), (result, expect)
emit(result=result.tolist())
