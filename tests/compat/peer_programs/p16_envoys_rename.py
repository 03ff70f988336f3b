# rename= aliases and envoys= custom Envoy classes.
import torch
from nnsight import LanguageModel
from nnsight.intervention.envoy import Envoy
from _common import GPT2, emit

class BlockEnvoy(Envoy):
    @property
    def hidden(self):
        return self.output[0]

model = LanguageModel(GPT2, dispatch=True, rename={"transformer.h": "layers", "mlp": "ffn"},
                      envoys={"transformer.h.*": BlockEnvoy})
with model.trace("Hello world"):
    a = model.layers[0].hidden.save()
    b = model.layers[1].ffn.output.save()
    c = model.transformer.h[2].output[0].save()
emit(a=list(a.shape), b=list(b.shape), c=list(c.shape), cls=type(model.layers[0]).__name__)
