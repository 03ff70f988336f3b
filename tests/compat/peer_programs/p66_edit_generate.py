# An edited model in generation: the edit's body applies as a trace body does (step 0).
from nnsight import LanguageModel
from _common import GPT2, emit

model = LanguageModel(GPT2, dispatch=True)
with model.edit() as (tracer, edited):
    model.transformer.h[0].output[:] = model.transformer.h[0].output * 1.5
norms = {}
for name, target in (("edited", edited), ("original", model)):
    with target.generate("Hello", max_new_tokens=3) as tracer:
        xs = list().save()
        for step in tracer.iter[0:3]:
            xs.append(round(float(target.transformer.h[0].output.abs().sum()), 3))
        result = tracer.result.save()
    norms[name] = xs
    norms[name + "_result"] = result.tolist()
emit(**norms)
