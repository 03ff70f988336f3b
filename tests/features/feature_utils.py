"""Helpers shared by the feature tests."""
import torch


def layers(kind, model):
    return model.transformer.h if kind == "gpt2" else model.model.layers


def hf_generate(model, prompts, **kwargs):
    """Plain Hugging Face greedy generation on the wrapped module (no nnsight involved)."""
    enc = model.tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model._module.generate(**enc, do_sample=False, **kwargs)


def make_mlp(seed=0, width=8, depth=4):
    torch.manual_seed(seed)
    mods = []
    for _ in range(depth):
        mods += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    return torch.nn.Sequential(*mods).eval()
