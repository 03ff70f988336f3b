# rename= with a module class key and envoys= with a class key.
from transformers.models.gpt2.modeling_gpt2 import GPT2Attention, GPT2MLP
from nnsight import LanguageModel
from nnsight.intervention.envoy import Envoy
from _common import GPT2, emit

class MLPEnvoy(Envoy):
    def doubled(self):
        return self.output * 2

model = LanguageModel(GPT2, dispatch=True, rename={GPT2Attention: "attention"}, envoys={GPT2MLP: MLPEnvoy})
with model.trace("Hello world"):
    att = model.transformer.h[0].attention.output[0].save()
    d = model.transformer.h[0].mlp.doubled().save()
    m = model.transformer.h[0].mlp.output.save()
emit(att=list(att.shape), ok=bool((d == m * 2).all()), cls=type(model.transformer.h[1].mlp).__name__)
