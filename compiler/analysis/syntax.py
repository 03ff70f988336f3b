"""Syntax findings: a file that does not parse (NN101), syntax newer than the target (NN102)."""
from __future__ import annotations

import ast
import re
import sys
from typing import Callable, Dict, FrozenSet, List, Tuple

import libcst as cst

from ..diagnostics import Diagnostic
from ..frontend.features import features_table, scan_features
from ..frontend.parse import split_lines
from . import codes

Version = Tuple[int, int]

_LIBCST_POS = re.compile(r"error at (\d+):(\d+)")


def syntax_error(text: str, e: Exception, path: str) -> Diagnostic:
    """The NN101 diagnostic of a text libcst failed to parse with error ``e``."""
    lines = [line.rstrip("\r\n") for line in split_lines(text)]
    message = str(getattr(e, "message", e)).splitlines()[0] if str(e) else type(e).__name__
    m = _LIBCST_POS.search(message)
    line, col = (int(m.group(1)), int(m.group(2))) if m else (getattr(e, "raw_line", 1), 0)
    message = _LIBCST_POS.sub("", message).replace("parser error: ", "").strip(" :") or message
    try:
        ast.parse(text)
    except SyntaxError as se:
        # Python's own message is clearer, but an interpreter older than libcst's grammar
        # may stop early on newer syntax: trust it if it agrees, or if libcst only hit the end.
        if se.lineno and (sys.version_info >= (3, 13) or se.lineno >= line or line >= len(lines)):
            line, col, message = se.lineno, max(0, (se.offset or 1) - 1), se.msg
    except (ValueError, RecursionError, MemoryError):
        pass
    line = min(max(1, line), max(1, len(lines)))
    source = lines[line - 1] if lines else ""
    col = min(col, len(source))
    if not message.startswith("invalid syntax"):
        message = "invalid syntax: " + message
    return Diagnostic(path=path, line=line, col=col, code="NN101", message=message, severity="error",
                      hint=codes.hint("NN101"), length=1, source_line=source)


def _versions() -> Dict[str, Version]:
    out: Dict[str, Version] = {}
    for name, version in features_table():
        out[name] = max(version, out.get(name, version))
    return out


def lowerable() -> FrozenSet[str]:
    """Features the compiler rewrites to older syntax itself (:mod:`compiler.passes`)."""
    try:
        from ..passes import PASSES
    except ImportError:
        return frozenset()
    return frozenset(PASSES)


def newer_syntax(module: cst.Module, line_of: Callable[[cst.CSTNode], int],
                 target: Version) -> List[Tuple[int, str, Version]]:
    """``(line, feature, version)`` for each syntax feature newer than ``target`` (first use only).

    Features the compiler lowers itself are not reported.
    """
    versions = _versions()
    skip = lowerable()
    _, features = scan_features([module], line_of)
    return [(line, name, versions[name]) for name, line in features
            if versions.get(name, (0, 0)) > target and name not in skip]
