"""Model wrappers: ``NNsight`` for any module, ``LanguageModel`` for causal LMs."""
from .base import NNsight  # noqa: F401
from .language import LanguageModel  # noqa: F401
