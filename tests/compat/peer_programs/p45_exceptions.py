# An exception raised in the trace body reaches the user's except, with its own type.
from nnsight import LanguageModel
from _common import GPT2, emit

model = LanguageModel(GPT2, dispatch=True)
caught = []
try:
    with model.trace("Hello world"):
        h = model.transformer.h[0].output
        x = 1 / 0
except ZeroDivisionError as e:
    caught.append(type(e).__name__)
try:
    with model.trace("Hello world"):
        model.transformer.h[0].output[0, 0, 10000] = 1
except IndexError as e:
    caught.append(type(e).__name__)
with model.trace("Hello world"):
    ok = model.lm_head.output.save()
emit(caught=caught, ok=list(ok.shape))
