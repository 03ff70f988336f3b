# for step in tracer.iter[...] during generation; tracer.result.
import torch
from nnsight import LanguageModel
from _common import GPT2, hf, num, emit

model = LanguageModel(GPT2, dispatch=True)
with model.generate("Hello, my name is", max_new_tokens=4) as tracer:
    tokens = list().save()
    for step in tracer.iter[:]:
        tokens.append(model.lm_head.output[0, -1].argmax(dim=-1).item())
    result = tracer.result.save()
ref, tok = hf(GPT2)
with torch.no_grad():
    expect = ref.generate(**tok("Hello, my name is", return_tensors="pt"), max_new_tokens=4, do_sample=False)
assert result.tolist() == expect.tolist()
emit(tokens=tokens, result=result.tolist())
