"""``from nnsight import ndif``: the remote service from the client's side.

``ndif.register(module)`` sends a local package by value with every request
(code not installed on the server); ``ndif.compare()`` shows package versions
here and on the server; ``ndif.status()`` the hosted models.
"""
from compiler.policy import register  # noqa: F401

from .remote.service import compare, is_model_running, status  # noqa: F401
