"""``model.logits`` and ``model.samples``: providers for values no vLLM module returns.

Both are envoy-only children of the root (not submodules of the vLLM model, whose
state dict stays untouched). The model runner calls them once per engine step:
``logits`` with the ``[num_requests, vocab]`` logits before sampling,
``samples`` with the ``[num_requests, 1]`` sampled token ids. Setting their
output changes what is sampled / what the request generates.
"""
from ..generator import WrapperModule

NAMES = ("logits", "samples")


def add_wrappers(model) -> None:
    """Give the root envoy ``model`` its ``logits`` and ``samples`` children."""
    from ...envoy import Envoy

    for name in NAMES:
        if name not in model._children:
            model._children[name] = Envoy(WrapperModule(), f"{model.path}.{name}", model._interleaver)
    model.__dict__["_patch_cache"] = None
