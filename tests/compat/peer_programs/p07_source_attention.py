# .source on attention: the attention call under 0.8.1's name (it counts the assignment too).
import torch
from nnsight import LanguageModel
from _common import GPT2, first, num, emit

model = LanguageModel(GPT2, dispatch=True)
with model.trace("Hello world"):
    attn_out = model.transformer.h[0].attn.source.attention_interface_1.output.save()
    block = model.transformer.h[0].attn.output.save()
emit(kind=type(attn_out).__name__, n=len(attn_out), shape=list(attn_out[0].shape),
     v=num(attn_out[0][0, -1, 0, :4] if attn_out[0].dim() == 4 else attn_out[0][0, -1, :4]))
