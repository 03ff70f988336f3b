# Model attributes outside a trace: dispatch, device, config, tokenizer, module lists, parameters.
from nnsight import LanguageModel
from _common import GPT2, emit

model = LanguageModel(GPT2)
before = list(model.transformer.wte.weight.shape)
model.dispatch()
n_params = sum(p.numel() for p in model.parameters())
emit(before=before, device=str(model.device), n_layer=model.config.n_layer,
     pad_side=model.tokenizer.padding_side, n=len(model.transformer.h), n_params=n_params,
     names=[n for n, _ in model.transformer.h[0].named_children()],
     eos=model.tokenizer.eos_token, path=model.transformer.h[0].mlp.path)
