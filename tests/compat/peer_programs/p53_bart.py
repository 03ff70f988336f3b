# BART (encoder-decoder, a loaded module): decoder_input_ids reach the model; generate with tracer.result.
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
from nnsight import TransformersModel
from _common import BART, emit

ref = AutoModelForSeq2SeqLM.from_pretrained(BART).eval()
tok = AutoTokenizer.from_pretrained(BART)
model = TransformersModel(AutoModelForSeq2SeqLM.from_pretrained(BART).eval(), tokenizer=tok)
enc = tok("The capital of France is Paris", return_tensors="pt")
dec = torch.tensor([[ref.config.decoder_start_token_id, 5, 6]])
with model.trace(enc["input_ids"], decoder_input_ids=dec):
    enc_out = model.model.encoder.layers[-1].output.save()
    logits = model.lm_head.output.save()
with torch.no_grad():
    expect = ref(**enc, decoder_input_ids=dec).logits
assert torch.allclose(logits, expect, atol=1e-4)
with model.generate(enc["input_ids"], max_new_tokens=3) as tracer:
    result = tracer.result.save()
with torch.no_grad():
    gen = ref.generate(**enc, max_new_tokens=3, do_sample=False)
assert result.tolist() == gen.tolist()
emit(logits=list(logits.shape), result=result.tolist())
