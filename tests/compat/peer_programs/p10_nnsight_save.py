# nnsight.save(x) instead of x.save().
import nnsight
import torch
from nnsight import LanguageModel
from _common import GPT2, num, emit

model = LanguageModel(GPT2, dispatch=True)
with model.trace("Hello world"):
    norms = nnsight.save([model.transformer.h[i].output[0].norm().item() for i in range(2, 4)])
    hs = nnsight.save(model.transformer.h[-1].output[0])
emit(shape=list(hs.shape), norms=[round(n, 3) for n in norms])
