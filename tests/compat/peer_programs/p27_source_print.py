# .source printing lists the operations; reading an operation's input.
import nnsight
from nnsight import LanguageModel
from _common import GPT2, emit

model = LanguageModel(GPT2, dispatch=True)
text = str(model.transformer.h[0].attn.source)
with model.trace("Hello world"):
    q = model.transformer.h[0].attn.source.attention_interface_1.inputs
    shapes = [list(a.shape) for a in q[0][1:4]]
    shapes = nnsight.save(shapes)
emit(has_call="attention_interface_" in text, shapes=shapes)
