# model.edit(): the edit holds on every later trace of the edited model, not the original.
import torch
from nnsight import LanguageModel
from _common import GPT2, emit

model = LanguageModel(GPT2, dispatch=True)
with model.edit() as (tracer, edited):
    model.transformer.h[0].output[0][:] = 0
with model.trace("Hello world"):
    orig = model.transformer.h[0].output[0].save()
result = {}
with edited.trace("Hello world"):
    ed = edited.transformer.h[0].output[0].save()
emit(orig_nonzero=bool(orig.abs().sum() > 0), edited_sum=float(ed.abs().sum()), kind=type(edited).__name__)
