# iter / all on a submodule's envoy (0.8.1 has them on every envoy).
from nnsight import LanguageModel
from _common import GPT2, emit

model = LanguageModel(GPT2, dispatch=True)
with model.generate("Hello", max_new_tokens=3) as tracer:
    a = list().save()
    for step in model.transformer.h[0].iter[0:2]:
        a.append(list(model.transformer.h[0].output.shape))
with model.generate("Hello", max_new_tokens=3) as tracer:
    b = list().save()
    for step in model.lm_head.all():
        b.append(list(model.lm_head.output.shape))
emit(a=a, b=b)
