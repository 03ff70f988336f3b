"""nnsight: look inside neural networks while they run.

    from nnsight import LanguageModel
    model = LanguageModel("path/or/id")
    with model.trace("The capital of France is"):
        hidden = model.model.layers[0].output.save()

Each ``with`` block is compiled to a portable intervention IR (``compiler``)
and executed by the interleaving runtime (``runtime``).
"""
from runtime.errors import MissedProviderError, OutOfOrderError  # noqa: F401
from runtime.saves import save  # noqa: F401

from .config import CONFIG  # noqa: F401
from .envoy import Envoy  # noqa: F401
from .modeling import LanguageModel, NNsight  # noqa: F401
from . import pymount as _pymount

__version__ = "0.9.0.dev0"

if CONFIG.APP.PYMOUNT:
    _pymount.mount()
