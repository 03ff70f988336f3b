# Iterating and indexing envoys: for layer in model.transformer.h, negative and slice indices.
from nnsight import LanguageModel
from _common import GPT2, emit

model = LanguageModel(GPT2, dispatch=True)
with model.trace("Hello world"):
    norms = list().save()
    for layer in model.transformer.h[:2]:
        norms.append(round(layer.output.norm().item(), 3))
    last = model.transformer.h[-1].output.save()
emit(norms=norms, n=len(model.transformer.h), last=list(last.shape), truthy=bool(model.transformer.ln_f),
     path=model.transformer.h[1].path)
