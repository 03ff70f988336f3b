"""nnsight: look inside neural networks while they run.

    from nnsight import LanguageModel
    model = LanguageModel("path/or/id")
    with model.trace("The capital of France is"):
        hidden = model.model.layers[0].output.save()

Each ``with`` block is compiled to a portable intervention IR (``compiler``)
and executed by the interleaving runtime (``runtime``).

Without torch installed, only the remote client is available:
``RemoteModel``, ``CONFIG``, ``login``, ``status``, ``is_model_running``, ``ndif``,
``save`` and ``register``.
"""
from runtime.errors import MissedProviderError, OutOfOrderError  # noqa: F401
from runtime.saves import save  # noqa: F401
from compiler.policy import register  # noqa: F401  (send a module/package by value to remote servers)
from compiler import __version__  # noqa: F401

from .config import CONFIG  # noqa: F401
from .deprecation import NNsightDeprecationWarning  # noqa: F401
from .remote.arrays import importable as _importable
from .remote.model import RemoteModel  # noqa: F401
from .remote.service import is_model_running, status  # noqa: F401
from . import ndif  # noqa: F401

ndif_status = status

HAS_TORCH = _importable("torch")

__all__ = [
    "RemoteModel", "save", "register", "CONFIG", "login",
    "OutOfOrderError", "MissedProviderError", "NNsightDeprecationWarning",
    "ndif_status", "status", "is_model_running",
]


def login(api_key: str, host: str = None, save: bool = True) -> None:
    """Use ``api_key`` (and ``host``, if given) for ``remote=True``; ``save`` keeps them for later sessions."""
    CONFIG.API.APIKEY = api_key
    if host is not None:
        CONFIG.API.HOST = host
    if save:
        CONFIG.set_default_api_key(api_key)


if HAS_TORCH:
    from ._local import *  # noqa: F401,F403,E402  (the local API: models, envoys, tracing)
    from ._local import __all__ as _local_names  # noqa: E402

    __all__ = list(_local_names) + __all__
    if _importable("diffusers"):  # `from nnsight import *` works without the `diffusion` extra
        __all__.insert(len(_local_names), "DiffusionModel")


def __getattr__(name):  # `from nnsight import DiffusionModel`, imported on first use
    if name == "DiffusionModel" and HAS_TORCH:
        from .modeling.diffusion import DiffusionModel

        return DiffusionModel
    if not HAS_TORCH and name in ("LanguageModel", "TransformersModel", "NNsight", "Envoy", "DiffusionModel"):
        raise ImportError("nnsight.%s needs torch, which is not installed here. Without torch, use "
                          "nnsight.RemoteModel(name, host=..., api_key=...) to run traces on a server."
                          % name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
