# model.scan: shapes without running the real model.
import nnsight
from nnsight import LanguageModel
from _common import GPT2, emit

model = LanguageModel(GPT2, dispatch=True)
with model.scan("Hello world"):
    dim = nnsight.save(model.transformer.h[0].output.shape)
emit(dim=list(dim))
