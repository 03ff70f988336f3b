"""Tracing contexts: the with-blocks users write (trace, invoke, ...)."""
from .base import Tracer  # noqa: F401
from .interleaving import InterleavingTracer  # noqa: F401
from .invoker import Invoker  # noqa: F401
