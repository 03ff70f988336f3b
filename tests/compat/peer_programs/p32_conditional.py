# Python control flow on real values inside a trace.
import nnsight
from nnsight import LanguageModel
from _common import GPT2, emit

model = LanguageModel(GPT2, dispatch=True)
with model.trace("Hello world"):
    h = model.transformer.h[0].output
    if h.norm() > 0:
        branch = nnsight.save("positive")
    else:
        branch = nnsight.save("zero")
    total = 0
    for i in range(h.shape[1]):
        total += h[0, i].abs().sum().item()
    total = nnsight.save(round(total, 2))
emit(branch=branch, total=total)
