# tracer.stop(): the rest of the model does not run; saved values survive.
from nnsight import LanguageModel
from _common import GPT2, num, emit

model = LanguageModel(GPT2, dispatch=True)
calls = []
handle = model.transformer.h[3]._module.register_forward_hook(lambda *a: calls.append(1)) if hasattr(model.transformer.h[3], "_module") else None
with model.trace("Hello world") as tracer:
    h = model.transformer.h[0].output[0].save()
    tracer.stop()
emit(shape=list(h.shape), later_ran=len(calls))
