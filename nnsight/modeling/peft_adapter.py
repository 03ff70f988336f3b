"""``peft=``: a PEFT adapter (LoRA, ...) loaded onto a Hugging Face model before it is wrapped.

The wrapped module is then the ``PeftModel``: its tree is the adapter's (``model.base_model.model
.transformer...``), exactly what ``PeftModel.from_pretrained(model, adapter)`` gives without nnsight.
On a meta-loaded model the adapter's layers are added without weights (:func:`structure`), so the
envoy tree is final before the weights load.
"""
from typing import Any, Dict

import torch

_HUB_KEYS = ("revision", "token")


def _peft():
    try:
        import peft
    except ImportError:
        raise ImportError(
            "`peft=` loads a PEFT adapter, which needs the `peft` package: `pip install peft` "
            "(or install nnsight with its `torch` extra).") from None
    return peft


def structure(model: torch.nn.Module, adapter: str, kwargs: Dict[str, Any]) -> torch.nn.Module:
    """``model`` with the adapter's layers added (weights not loaded): for a meta-device model."""
    peft = _peft()
    config = peft.PeftConfig.from_pretrained(adapter, **{k: kwargs[k] for k in _HUB_KEYS if k in kwargs})
    return peft.get_peft_model(model, config)


def load(model: torch.nn.Module, adapter: str, kwargs: Dict[str, Any]) -> torch.nn.Module:
    """``model`` with the adapter loaded, in eval mode, as ``PeftModel.from_pretrained`` gives it."""
    peft = _peft()
    loaded = peft.PeftModel.from_pretrained(model, adapter, **{k: kwargs[k] for k in _HUB_KEYS if k in kwargs})
    return loaded.eval()
