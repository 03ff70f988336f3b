"""Model wrappers: ``NNsight`` for any module, ``LanguageModel`` for causal LMs,
``TransformersModel`` for any transformers model (by pipeline task)."""
from .base import NNsight  # noqa: F401
from .language import LanguageModel  # noqa: F401
from .transformers import TransformersModel  # noqa: F401


def __getattr__(name):  # DiffusionModel on first use: `import nnsight` stays as cheap as before
    if name == "DiffusionModel":
        from .diffusion import DiffusionModel

        return DiffusionModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
