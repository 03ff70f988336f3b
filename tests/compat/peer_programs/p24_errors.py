# The error classes 0.8.1 code catches.
from nnsight import LanguageModel
from nnsight.intervention.interleaver import OutOfOrderError
from _common import GPT2, emit

model = LanguageModel(GPT2, dispatch=True)
caught = {}
try:
    with model.trace("Hello world"):
        b = model.transformer.h[1].output.save()
        a = model.transformer.h[0].output.save()
except OutOfOrderError:
    caught["order"] = "OutOfOrderError"
try:
    model.transformer.h[0].output.save()
except ValueError:
    caught["outside"] = "ValueError"
except Exception as e:
    caught["outside"] = type(e).__name__
try:
    model.transformer.nonexistent
except AttributeError:
    caught["attr"] = "AttributeError"
emit(**caught)
