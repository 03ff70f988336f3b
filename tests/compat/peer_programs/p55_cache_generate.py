# tracer.cache during generation: one entry per call of the module.
from nnsight import LanguageModel
from _common import GPT2, emit

model = LanguageModel(GPT2, dispatch=True)
with model.generate("Hello", max_new_tokens=3) as tracer:
    cache = tracer.cache(modules=[model.lm_head])
entry = cache["model.lm_head"]
out = entry.output
emit(kind=type(out).__name__, n=len(out) if isinstance(out, list) else 1,
     shapes=[list(o.shape) for o in out] if isinstance(out, list) else [list(out.shape)])
