# TransformersModel for BERT's fill-mask: trace, the masked position's logits, pipe.
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer
from nnsight import TransformersModel
from _common import BERT, num, emit

model = TransformersModel(BERT, task="fill-mask", dispatch=True)
text = "the capital of france is [MASK]."
with model.trace(text):
    inter = model.bert.encoder.layer[1].intermediate.output.save()
    logits = model.cls.predictions.decoder.output.save()
ref = AutoModelForMaskedLM.from_pretrained(BERT).eval()
tok = AutoTokenizer.from_pretrained(BERT)
with torch.no_grad():
    expect = ref(**tok(text, return_tensors="pt")).logits
assert torch.allclose(logits, expect, atol=1e-4)
with model.pipe(text, top_k=2) as tracer:
    result = tracer.result.save()
emit(task=model.task, inter=list(inter.shape), v=num(logits[0, 1, :4]),
     tokens=sorted(r["token_str"] for r in result), scores=sorted(round(r["score"], 3) for r in result))
