"""Errors raised by the IR layer (all derive from :class:`IRError`)."""
from __future__ import annotations

from typing import Iterable, List


class IRError(Exception):
    """Base class of every IR error."""


class IRParseError(IRError):
    """The text form could not be parsed; ``line`` and ``col`` are 1-based."""

    def __init__(self, message: str, line: int, col: int = 1):
        self.message = message
        self.line = line
        self.col = col
        super().__init__("line %d, col %d: %s" % (line, col, message))


class IRDecodeError(IRError):
    """A binary payload, record or value tree is malformed."""


class IRLimitError(IRDecodeError):
    """A payload exceeds one of the decoding limits (:class:`compiler.ir.limits.DecodeLimits`).

    ``limit`` is the name of the field that was exceeded, so the message can say how to raise it.
    """

    def __init__(self, message: str, limit: str = ""):
        self.limit = limit
        super().__init__(message)


class IRVersionError(IRError):
    """The program's ``ir_version`` is newer than, or unknown to, this runtime."""


class IRVerifyError(IRError):
    """A program violates structural invariants; ``problems`` lists them all."""

    def __init__(self, problems: Iterable[str]):
        self.problems: List[str] = list(problems)
        lines = "\n".join("  - " + p for p in self.problems)
        super().__init__("invalid IR program (%d problem%s):\n%s" % (
            len(self.problems), "" if len(self.problems) == 1 else "s", lines))


class UnencodableValueError(IRError, TypeError):
    """A captured value cannot be encoded as a value tree (no pickle fallback)."""
