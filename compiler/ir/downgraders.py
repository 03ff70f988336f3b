"""Writing a program for an older runtime: the IR version a server says it accepts.

A server refuses a request in a newer IR version than its own, with the range it accepts. A
program that uses nothing the older version lacks is written in that version instead, so a client
upgraded before its server keeps working; one that needs the newer version is refused here, on
the client, naming what it uses and where. The server reads the older record through its own
upgraders (:mod:`.upgraders`), exactly as it reads one an older client wrote.

Each step turns a record of version ``v`` into one of version ``v - 1`` (the inverse of
``UPGRADERS[v - 1]``), or raises :class:`~compiler.ir.errors.IRVersionError`.
"""
from __future__ import annotations

from typing import Callable, Dict

from .errors import IRVersionError
from .nodes import FACT_BACKWARD
from .upgraders import Record
from .version import IR_VERSION

# version v -> function(record of version v) -> record of version v - 1
DOWNGRADERS: Dict[int, Callable[[Record], Record]] = {}

OLDEST_WRITTEN = 2  # version 1 decided invokes from source text: never written again


def _v3_to_v2(record: Record) -> Record:
    """Version 3 added the unit fact ``backward`` and ``Program.unknown_facts``: a program with a
    gradient session cannot be said in version 2 (its runtime would not refuse it where it must)."""
    for unit in record.get("units", ()):
        if FACT_BACKWARD in unit.get("facts", ()):
            loc = unit.get("loc") or ["<unknown>", 0]
            first = (unit.get("header") or [loc[1]])[0]
            raise IRVersionError(
                "the server accepts IR version 2, which cannot express the gradient session "
                "(`with ....backward():`) at %s:%s; upgrade nnsight on the server, or run this trace "
                "locally" % (loc[0], first))
    if record.get("unknown_facts"):
        raise IRVersionError("this program was upgraded from an older version (unknown facts %s) and "
                             "cannot be written back" % record["unknown_facts"])
    record.pop("unknown_facts", None)
    return record


DOWNGRADERS[3] = _v3_to_v2


def downgrade(record: Record, version: int) -> Record:
    """``record`` (of version ``IR_VERSION``, header included) rewritten in ``version``, in place."""
    if type(version) is not int or not OLDEST_WRITTEN <= version <= IR_VERSION:
        raise IRVersionError("cannot write IR version %r: this nnsight writes versions %d to %d"
                             % (version, OLDEST_WRITTEN, IR_VERSION))
    v = record["header"]["ir_version"]
    while v > version:
        record = DOWNGRADERS[v](record)
        v -= 1
    record["header"]["ir_version"] = version
    return record
