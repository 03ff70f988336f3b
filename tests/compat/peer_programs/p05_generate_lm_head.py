# model.generate with max_new_tokens; .save() of model.lm_head.output (the first step).
from nnsight import LanguageModel
from _common import GPT2, num, emit

model = LanguageModel(GPT2, dispatch=True)
with model.generate("The capital of France is", max_new_tokens=3) as tracer:
    logits = model.lm_head.output.save()
    out = model.generator.output.save()
emit(shape=list(logits.shape), first=num(logits[0, -1, :5]), out=out.tolist(),
     decoded=model.tokenizer.decode(out[0]))
