# LanguageModel over an already loaded HF model with its tokenizer; envoy attributes outside a trace.
import torch
from nnsight import LanguageModel
from _common import GPT2, hf, emit

ref, tok = hf(GPT2)
model = LanguageModel(ref, tokenizer=tok)
with model.trace("Hello world"):
    out = model.lm_head.output.save()
emit(shape=list(out.shape), n_layers=len(model.transformer.h), weight=list(model.lm_head.weight.shape),
     n_model_type=model.config.model_type, names=[type(l).__name__ for l in model.transformer.h][:1],
     wrapped=type(model.transformer.h[0]._module).__name__ if hasattr(model.transformer.h[0], "_module") else None)
