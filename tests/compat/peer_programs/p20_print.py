# print(model): the module tree with repeated blocks folded.
from nnsight import LanguageModel
from _common import GPT2, LLAMA, emit

out = {}
for name, path in (("gpt2", GPT2), ("llama", LLAMA)):
    text = repr(LanguageModel(path, dispatch=True))
    out[name] = [l.strip() for l in text.splitlines() if "x " in l and "(" in l]
emit(**out)
