"""Compiler diagnostics: what went wrong, where in the user's source, and how to fix it.

Rendered like a compiler's::

    mylib.py:12:5: error NN201: module 'os' is not available on the server
        import os
        ^^^^^^^^^
    hint: remove the import, or use a server-provided module (see docs/remotable-python.md)
"""
from __future__ import annotations

import linecache
from dataclasses import asdict, dataclass
from typing import Iterable, List, Optional


@dataclass(frozen=True)
class Diagnostic:
    """One finding. ``line`` is 1-based, ``col`` 0-based; ``length`` is the caret width."""

    path: str
    line: int
    col: int
    code: str
    message: str
    severity: str = "error"
    hint: str = ""
    length: int = 1
    source_line: Optional[str] = None  # the text of ``line``; read from the file when None

    def render(self) -> str:
        out = [f"{self.path}:{self.line}:{self.col + 1}: {self.severity} {self.code}: {self.message}"]
        text = self.source_line
        if text is None and self.line > 0:
            text = linecache.getline(self.path, self.line)
        if text:
            text = text.rstrip("\n")
            out.append("    " + text)
            out.append("    " + " " * self.col + "^" * max(1, min(self.length, len(text) - self.col)))
        if self.hint:
            out.append(f"hint: {self.hint}")
        return "\n".join(out)

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("source_line")
        return d


class DiagnosticError(Exception):
    """Raised when compilation finds errors; carries the diagnostics and renders them."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics: List[Diagnostic] = list(diagnostics)
        super().__init__("\n\n".join(d.render() for d in self.diagnostics))
