"""``nnsight.intervention.envoy.Envoy``: the 0.8 import path of :class:`nnsight.envoy.Envoy`."""
from ..envoy import Envoy  # noqa: F401

__all__ = ["Envoy"]
