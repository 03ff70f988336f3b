# Keyword arguments reach the model: labels give a loss.
import torch
from nnsight import LanguageModel
from _common import GPT2, hf, num, emit

model = LanguageModel(GPT2, dispatch=True)
ids = model.tokenizer("Hello world", return_tensors="pt")["input_ids"]
with model.trace(ids, labels=ids):
    loss = model.output.loss.save()
ref, tok = hf(GPT2)
with torch.no_grad():
    expect = ref(ids, labels=ids).loss
assert abs(float(loss) - float(expect)) < 1e-4
emit(loss=num(loss))
