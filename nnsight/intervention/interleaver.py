"""``from nnsight.intervention.interleaver import OutOfOrderError``: where nnsight 0.8 defines its interleaving errors.

The classes are the runtime's own (``runtime.errors``), so an ``except`` written
against either path catches the same errors.
"""
from runtime.errors import EarlyStopException, MissedProviderError, OutOfOrderError

__all__ = ["EarlyStopException", "MissedProviderError", "OutOfOrderError"]
