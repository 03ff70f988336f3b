"""Diagnostics of the closure pass, placed where the user wrote the offending name.

Codes shared with the static checker (:mod:`compiler.analysis.codes`):
NN201 dangerous module, NN202 installed module the server does not provide,
NN204 module found nowhere (:mod:`compiler.unresolved`), NN301 dangerous builtin,
NN401 dangerous module reached through an allowed one, NN503 (below; the checker
reports it for allowed modules' objects the server cannot name).
Codes of the closure pass itself (NN5xx: what was found at capture time):

NN501  a value cannot be sent (no pickle fallback)
NN502  the source of a function or class cannot be found
NN503  an object that cannot be captured (class defined in a function, bound method, ...)
NN504  another model's module, or another trace's tracer
"""
from __future__ import annotations

import linecache
from dataclasses import dataclass
from typing import Optional, Set, Tuple

from ..diagnostics import Diagnostic
from ..ir.errors import UnencodableValueError
from ..ir.nodes import SourceLoc
from .scan import Chain, Pos, SourceFacts

HINTS = {
    "NN201": "remove it: do file, process and network work outside the trace and pass the results in as values",
    "NN202": "use a module the server provides; if this is your own package installed in site-packages, "
             "send it by value with nnsight.register(%r)",
    "NN301": "compute the value outside the trace and pass it in",
    "NN401": "do not reach a refused module or entry point (torch.hub, torch.save, numpy.load, ...) through an "
             "allowed module; remove the access, and do file work outside the trace",
    "NN501": "create the object inside the trace, or pass plain data (tensors, numbers, strings, lists, "
             "dicts, dataclasses, ...) instead",
    "NN502": "define it in a .py file (or a notebook cell), so that its source can be sent",
    "NN503": "",
    "NN504": "a trace runs one model: use this model's modules, or run the other model in its own trace",
}


class CaptureRejected(UnencodableValueError):
    """A capture was refused; ``diagnostic`` says where and why (passes through value encoding)."""

    def __init__(self, diagnostic: Diagnostic):
        self.diagnostic = diagnostic
        super().__init__(diagnostic.render())


@dataclass
class Where:
    """A use of a name in user code: the snippet, where it starts, and the facts about it."""

    loc: SourceLoc
    source: str
    name: str = ""
    pos: Optional[Pos] = None
    facts: Optional[SourceFacts] = None
    context: str = ""  # "in mymethods.normalize": what the snippet is

    def at(self, name: str, pos: Optional[Pos] = None) -> "Where":
        """The same snippet, pointing at ``name`` (its first use unless ``pos`` is given)."""
        if pos is None and self.facts is not None:
            pos = self.facts.positions.get(name)
        return Where(self.loc, self.source, name, pos or self.pos, self.facts, self.context)

    @property
    def chains(self) -> Optional[Set[Chain]]:
        """Attribute chains read on ``name`` here (None: unknown, e.g. a value nested in data)."""
        if self.facts is None or not self.name:
            return None
        return set(self.facts.chains.get(self.name, set()))

    @property
    def bare(self) -> bool:
        """Whether ``name`` is used here other than as ``name.attr``."""
        return self.facts is None or self.name in self.facts.bare

    def file_position(self) -> Tuple[int, int, int, Optional[str]]:
        """(line, column, length, text of the line) in the user's file."""
        loc = self.loc
        if self.pos is None:
            real = linecache.getline(loc.file, loc.line).rstrip("\r\n")
            return loc.line, loc.col, 1, real or self.source.split("\n", 1)[0]
        src_line, src_col, length = self.pos
        lines = self.source.split("\n")
        text = lines[src_line - 1] if src_line - 1 < len(lines) else ""
        fragment = text[src_col:src_col + length]
        line = loc.line + src_line - 1
        real = linecache.getline(loc.file, line).rstrip("\r\n")
        if real:
            candidates = [loc.col + src_col] if src_line == 1 else [loc.col + src_col, src_col]
            for c in candidates:
                if real[c:c + len(fragment)] == fragment:
                    return line, c, length, real
            found = real.find(fragment) if fragment else -1
            if found >= 0:
                return line, found, length, real
        return line, src_col, length, text


def diagnostic(code: str, where: Optional[Where], message: str, hint: str = "") -> Diagnostic:
    """A Diagnostic for ``where`` (file, line, column and caret width of the use)."""
    if where is None:
        return Diagnostic(path="<unknown>", line=0, col=0, code=code, message=message,
                          hint=hint or HINTS.get(code, ""), source_line="")
    line, col, length, text = where.file_position()
    return Diagnostic(path=where.loc.file, line=line, col=col, code=code, message=message,
                      hint=hint or HINTS.get(code, ""), length=length, source_line=text)
