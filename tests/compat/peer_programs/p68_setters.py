# Setting .inputs, a .source operation's output, and a gradient; a source call's inputs.
import nnsight
from nnsight import LanguageModel
from _common import GPT2, emit

model = LanguageModel(GPT2, dispatch=True)
with model.trace("Hello world"):
    args, kwargs = model.transformer.h[0].mlp.inputs
    model.transformer.h[0].mlp.inputs = ((args[0] * 0,), kwargs)
    mlp = model.transformer.h[0].mlp.output.save()
with model.trace("Hello world"):
    op = model.transformer.h[1].attn.source.attention_interface_1
    n_args = nnsight.save(len(op.inputs[0]))
    keys = nnsight.save(sorted(op.inputs[1].keys()))
    out = op.output
    op.output = (out[0] * 0, out[1])
    attn = model.transformer.h[1].attn.output[0].save()
with model.trace("Hello world"):
    h = model.transformer.h[1].output
    loss = model.lm_head.output.sum()
    with loss.backward():
        g = h.grad.save()
        h.grad = h.grad * 0
weight_grad = model.transformer.h[0].mlp.c_fc.weight.grad
emit(mlp=round(float(mlp.abs().sum()), 4), n_args=n_args, keys=keys, attn=round(float(attn.abs().sum()), 4),
     g=list(g.shape), wgrad=round(float(weight_grad.abs().sum()), 4))
