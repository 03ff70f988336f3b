"""``from nnsight.intervention.source import SourceNotAvailable``: where nnsight 0.8 defines ``.source``'s classes.

Every error ``.source`` raises because it can't give what was asked (no Python
source, a module's call, recursive ``.source`` outside a trace) is a
:class:`SourceNotAvailable`, which is also a ``ValueError``.
"""
from runtime.errors import SourceNotAvailable

from ..source import EnvoySource, OperationEnvoy

__all__ = ["EnvoySource", "OperationEnvoy", "SourceNotAvailable"]
