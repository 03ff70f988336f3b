"""Language-level gate: refuse, before anything runs, a program this Python cannot execute.

Every program's header records the lowest Python whose grammar accepts all of
its code (``min_python``) and the syntax features that raised it, with their
lines (``features``; see :mod:`compiler.frontend.features`). A client on any
Python 3.9-3.13 may compile a program; the runtime that loads it checks the
level first (:class:`runtime.builder.CompiledProgram` calls :func:`check`), so
an incompatible program fails with a message that names the feature, the line
and both versions -- not with a SyntaxError half-way, and before any model code
runs.
"""
import sys
from typing import Optional, Sequence, Tuple

from .errors import NNsightError

Version = Tuple[int, int]


class LanguageLevelError(NNsightError):
    """The program needs a newer Python than the one running it.

    Attributes: ``required`` and ``runtime`` as ``(major, minor)``, ``features``
    as the ``(name, line)`` pairs that need more than this runtime has.
    """

    def __init__(self, message: str, required: Version, runtime: Version, features: Sequence[Tuple[str, int]]):
        super().__init__(message)
        self.required = required
        self.runtime = runtime
        self.features = tuple(features)


def _feature_versions():
    try:
        from compiler.frontend.features import features_table
    except Exception as exc:  # the frontend (libcst) is optional on a server: fall back to the header alone
        from compiler.fallbacks import FALLBACKS, reason_of

        FALLBACKS.note("gate.features_table", reason_of(exc))
        return {}
    return dict(features_table())


def _v(version: Sequence[int]) -> str:
    return ".".join("%d" % n for n in version)


def _file_of(program, line: int) -> str:
    """The file of the unit (else the definition) whose code covers ``line``."""
    for code in tuple(program.units) + tuple(getattr(program, "definitions", ())):
        first = code.loc.line
        if first <= line < first + max(1, code.source.count("\n")):
            return code.loc.file
    return program.units[0].loc.file if program.units else "<program>"


def check(program, runtime: Optional[Sequence[int]] = None) -> None:
    """Raise :class:`LanguageLevelError` if ``program`` needs a newer Python than ``runtime``.

    ``runtime`` defaults to the running interpreter (``sys.version_info``).
    """
    header = program.header
    try:
        required = tuple(int(n) for n in header.min_python)[:2]
    except (TypeError, ValueError):
        return  # malformed headers are the verifier's business
    full = tuple(runtime) if runtime is not None else tuple(sys.version_info[:3])
    have = full[:2]
    if required <= have:
        return
    versions = _feature_versions()
    too_new = [(name, line) for name, line in header.features if versions.get(name, required) > have]
    if too_new:
        what = ", ".join("%s at %s:%d" % (name, _file_of(program, line), line) for name, line in too_new)
    else:
        what = "header min_python %s" % _v(required)
    client = " (compiled on Python %s)" % header.python if header.python else ""
    message = (
        "this program%s needs Python %s (%s) but this runtime is Python %s; compile it with "
        "syntax that Python %s accepts (rewrite those lines), or run it on a %s runtime"
        % (client, _v(required), what, _v(full), _v(have), _v(required)))
    raise LanguageLevelError(message, required, have, too_new)
