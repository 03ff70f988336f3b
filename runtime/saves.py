"""Which objects a trace keeps: ``nnsight.save(x)`` marks ``id(x)``.

After a trace, variables whose values are marked are written back to the
user's frame (or sent back from a server); everything else is dropped.
"""
from typing import Any, Set

from . import registries
from .errors import SaveOutsideTraceError

SAVES: Set[int] = set()  # never rebound (nnsight/pymount.py binds its `add`)
_depth = [0]


def tracing() -> bool:
    """True while at least one trace is executing or being set up."""
    return _depth[0] > 0


def enter() -> None:
    _depth[0] += 1


def exit() -> None:
    _depth[0] -= 1
    if _depth[0] == 0:
        SAVES.clear()


def save(obj: Any) -> Any:
    """Mark ``obj`` to outlive the trace and return it unchanged."""
    if _depth[0] == 0:
        raise SaveOutsideTraceError(
            "nnsight.save() / .save() was called outside of a trace. Saving only "
            "makes sense inside `with model.trace(...):` (or generate/session/scan); "
            "outside a trace, values are already ordinary Python objects."
        )
    SAVES.add(id(obj))
    return obj


def is_saved(obj: Any) -> bool:
    return id(obj) in SAVES


# Cleared when the outermost trace ends: holds the ids one (possibly nested) trace saved.
registries.track("runtime.saves.marked", lambda: len(SAVES), None)
