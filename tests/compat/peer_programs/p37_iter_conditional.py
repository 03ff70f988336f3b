# Step index inside an iter loop chooses where to intervene.
import torch
from nnsight import LanguageModel
from _common import GPT2, emit

model = LanguageModel(GPT2, dispatch=True)
with model.generate("Hello", max_new_tokens=3) as tracer:
    seen = list().save()
    for step in tracer.iter[:3]:
        if step == 1:
            model.transformer.h[0].output[:] = 0
        seen.append(int(model.transformer.h[0].output.abs().sum() == 0))
    out = model.generator.output.save()
with model.generate("Hello", max_new_tokens=3) as tracer:
    out2 = tracer.result.save()
emit(seen=seen, out=out.tolist(), out2=out2.tolist())
