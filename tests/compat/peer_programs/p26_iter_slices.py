# tracer.iter with a slice and a list; intervening on chosen steps only.
from nnsight import LanguageModel
from _common import GPT2, emit

model = LanguageModel(GPT2, dispatch=True)
with model.generate("Hello", max_new_tokens=5) as tracer:
    steps = list().save()
    for step in tracer.iter[1:3]:
        steps.append(step)
with model.generate("Hello", max_new_tokens=5) as tracer:
    picked = list().save()
    for step in tracer.iter[[0, 2, 4]]:
        picked.append(model.lm_head.output.shape[1])
emit(steps=steps, picked=picked)
