"""Check inputs (files, directories, module names) and collect one report."""
from __future__ import annotations

import io
import os
import tokenize
from dataclasses import dataclass, field
from typing import Iterable, List, Optional

from ..diagnostics import Diagnostic
from ..ir.version import MIN_PYTHON
from . import codes
from .checker import SourceContext, Version, check_text
from .targets import local_names_for, resolve


@dataclass
class Report:
    """Diagnostics of a check, in input order, and how many files were read."""

    diagnostics: List[Diagnostic] = field(default_factory=list)
    files: int = 0

    @property
    def errors(self) -> int:
        return sum(d.severity == "error" for d in self.diagnostics)

    @property
    def warnings(self) -> int:
        return sum(d.severity == "warning" for d in self.diagnostics)

    def summary(self) -> str:
        def n(count: int, word: str) -> str:
            return "%d %s%s" % (count, word, "" if count == 1 else "s")

        return "%s, %s in %s" % (n(self.errors, "error"), n(self.warnings, "warning"), n(self.files, "file"))

    def to_json(self) -> dict:
        return {
            "diagnostics": [d.to_json() for d in self.diagnostics],
            "summary": {"errors": self.errors, "warnings": self.warnings, "files": self.files},
        }


def check_paths(args: Iterable[str], *, target: Version = MIN_PYTHON) -> Report:
    """Check files, directories (recursively) and module names.

    Raises :class:`~compiler.analysis.targets.TargetError` for an input that
    names nothing (before anything is checked).
    """
    report = Report()
    resolved = [resolve(a) for a in args]
    seen = set()
    for t in resolved:
        report.diagnostics.extend(t.diagnostics)
        for shown, real in t.files:
            if real in seen:
                continue
            seen.add(real)
            report.files += 1
            report.diagnostics.extend(check_file(real, target=target, shown=shown))
    return report


def check_file(path: str, *, target: Version = MIN_PYTHON, shown: Optional[str] = None) -> List[Diagnostic]:
    """Check one file; ``shown`` is the name used in diagnostics (default: ``path``)."""
    shown = shown or path
    try:
        with open(path, "rb") as f:
            data = f.read()
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        text = data.decode(encoding)
    except (OSError, SyntaxError, UnicodeDecodeError, LookupError) as e:
        return [Diagnostic(path=shown, line=1, col=0, code="NN100", message="cannot read file: %s" % e,
                           severity="error", hint=codes.hint("NN100"), source_line="")]
    if text.startswith("\ufeff"):
        text = text[1:]
    root, local = local_names_for(path)
    ctx = SourceContext(shown, base_dir=os.path.dirname(os.path.abspath(path)), root=root, local=local,
                        target=target)
    return check_text(text, ctx)


def check_source(text: str, path: str = "<string>", *, target: Version = MIN_PYTHON,
                 base_dir: Optional[str] = None) -> List[Diagnostic]:
    """Check a source text; sibling modules of ``base_dir`` (if given) count as user code."""
    root, local = (None, frozenset())
    if base_dir is not None:
        root, local = local_names_for(os.path.join(base_dir, "__check__.py"))
    return check_text(text, SourceContext(path, base_dir=base_dir, root=root, local=local, target=target))
