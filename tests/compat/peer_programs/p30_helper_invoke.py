# tracer.invoke opened inside a helper function called from the trace body.
from nnsight import LanguageModel
from _common import GPT2, emit

model = LanguageModel(GPT2, dispatch=True)

def add_invoke(tracer, prompt, out):
    with tracer.invoke(prompt):
        out.append(model.lm_head.output.shape[1])

with model.trace() as tracer:
    out = list().save()
    add_invoke(tracer, "Hello world", out)
    add_invoke(tracer, "The capital of France is", out)
emit(out=sorted(out))
