# A name set in one invoke is read in a later one once that invoke has passed the module.
from nnsight import LanguageModel
from _common import GPT2, emit

model = LanguageModel(GPT2, dispatch=True)
with model.trace() as tracer:
    with tracer.invoke("Hello world"):
        shared = model.transformer.h[0].output.shape[1]
    with tracer.invoke("Big Ben is in"):
        h = model.transformer.h[0].output
        seen = [shared, h.shape[1]].save()
emit(seen=seen)
