# model.edit(inplace=True) and model.clear_edits().
import torch
from nnsight import LanguageModel
from _common import GPT2, emit

model = LanguageModel(GPT2, dispatch=True)
with model.edit(inplace=True):
    model.transformer.h[0].output[:] = 0
with model.trace("Hello world"):
    a = model.transformer.h[0].output.save()
model.clear_edits()
with model.trace("Hello world"):
    b = model.transformer.h[0].output.save()
emit(a=float(a.abs().sum()), b_nonzero=bool(b.abs().sum() > 0))
