# .input and .inputs of a module.
import nnsight
from nnsight import LanguageModel
from _common import GPT2, emit

model = LanguageModel(GPT2, dispatch=True)
with model.trace("Hello world"):
    ids = model.input.save()
    x = model.transformer.h[0].mlp.input.save()
    args, kwargs = model.transformer.h[0].mlp.inputs
    n = model.transformer.h[0].mlp.inputs[0][0].shape
    n = nnsight.save(n)
emit(x=list(x.shape), ids=ids.tolist(), n=list(n))
