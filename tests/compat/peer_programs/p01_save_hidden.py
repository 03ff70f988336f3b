# Saving hidden states and logits, checked against output_hidden_states of plain HF.
import nnsight
import torch
from nnsight import LanguageModel
from _common import GPT2, hf, first, num, close, emit

model = LanguageModel(GPT2, dispatch=True)
prompt = "The Eiffel Tower is in the city of"
with model.trace(prompt):
    hidden = nnsight.save([first(model.transformer.h[i].output) for i in range(4)])
    logits = model.lm_head.output.save()
ref, tok = hf(GPT2)
with torch.no_grad():
    r = ref(**tok(prompt, return_tensors="pt"), output_hidden_states=True)
assert close(logits, r.logits)
for i in range(3):
    assert close(hidden[i], r.hidden_states[i + 1])
emit(shape=list(logits.shape), last=num(logits[0, -1, :8]), h0=num(hidden[0][0, -1, :8]))
