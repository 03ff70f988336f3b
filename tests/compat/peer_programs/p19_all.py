# tracer.all() and model.all(): an intervention on every generation step.
from nnsight import LanguageModel
from _common import GPT2, emit

model = LanguageModel(GPT2, dispatch=True)
with model.generate("Hello", max_new_tokens=3) as tracer:
    shapes = list().save()
    for _ in tracer.all():
        shapes.append(list(model.lm_head.output.shape))
with model.generate("Hello", max_new_tokens=3) as tracer:
    shapes2 = list().save()
    for _ in model.all():
        shapes2.append(list(model.lm_head.output.shape))
emit(shapes=shapes, shapes2=shapes2)
