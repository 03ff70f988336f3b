# TransformersModel for sequence classification: logits, and pipe's labels.
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from nnsight import TransformersModel
from _common import BERT_CLS, num, emit

model = TransformersModel(BERT_CLS, task="text-classification", dispatch=True)
texts = ["I live in Paris", "Hello world"]
with model.trace(texts):
    pooled = model.bert.pooler.output.save()
    logits = model.classifier.output.save()
ref = AutoModelForSequenceClassification.from_pretrained(BERT_CLS).eval()
tok = AutoTokenizer.from_pretrained(BERT_CLS)
with torch.no_grad():
    expect = ref(**tok(texts, return_tensors="pt", padding=True)).logits
assert torch.allclose(logits, expect, atol=1e-4)
with model.pipe(texts) as tracer:
    labels = tracer.result.save()
emit(pooled=list(pooled.shape), logits=num(logits), labels=[l["label"] for l in labels])
