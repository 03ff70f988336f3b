# print() inside a trace prints real values as the model runs.
import contextlib
import io
from nnsight import LanguageModel
from _common import GPT2, emit

model = LanguageModel(GPT2, dispatch=True)
buffer = io.StringIO()
with contextlib.redirect_stdout(buffer):
    with model.trace("Hello world"):
        print("shape", tuple(model.transformer.h[0].output.shape))
        print("argmax", model.lm_head.output[0, -1].argmax().item())
emit(printed=buffer.getvalue().splitlines())
