# Llama attention .source: the rotary embedding call's output, and a skipped call.
import torch
from nnsight import LanguageModel
from _common import LLAMA, num, emit

model = LanguageModel(LLAMA, dispatch=True)
src = model.model.layers[0].self_attn.source
with model.trace("Hello world"):
    q, k = model.model.layers[0].self_attn.source.apply_rotary_pos_emb_0.output
    q = q.save()
    o = model.model.layers[0].self_attn.source.self_o_proj_0.output.save()
emit(q=list(q.shape), o=list(o.shape), qv=num(q[0, 0, -1, :4]))
