# Model keywords of the trace: output_attentions, output_hidden_states; remote=False.
import torch
from nnsight import LanguageModel
from _common import GPT2, hf, emit

model = LanguageModel(GPT2, dispatch=True, attn_implementation="eager")
with model.trace("Hello world", output_attentions=True, output_hidden_states=True, remote=False):
    out = model.output.save()
emit(n_att=len(out.attentions), att=list(out.attentions[0].shape), n_hidden=len(out.hidden_states))
