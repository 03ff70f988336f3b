"""Source passes run on lowered programs (torch-free, any client Python).

A pass rewrites unit (and definition) sources so that older runtimes accept
them, keeping every statement on its line and column; :func:`lower_syntax`
applies them to a :class:`~compiler.ir.nodes.Program` and recomputes the
header's ``min_python``/``features`` from what is left.

Passes:

* :mod:`.lower_parenthesized_with` -- parenthesized context managers (3.10)
  to the multi-item ``with a as x, b as y:`` form (3.9).

:func:`fold_definition_features` makes the header cover the program's
Definitions too (user code captured by value by :mod:`compiler.closure`), and
:func:`finish` (both, then :func:`lower_syntax`) is what a closed program gets
before it is sent.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Callable, Dict, Tuple

from ..ir.nodes import DEF_MODULE, Program
from ..ir.version import MIN_PYTHON

# feature name -> "module:function" of a pass; function(source) -> (lowered source, occurrences
# left as they were). Resolved on use: the passes import the frontend, which imports this package.
PASSES: Dict[str, str] = {
    "parenthesized context managers": "lower_parenthesized_with:lower_parenthesized_with",
}


def _pass(name: str) -> Callable[[str], Tuple[str, int]]:
    module, _, function = PASSES[name].partition(":")
    return getattr(importlib.import_module("." + module, __name__), function)


def finish(program: Program) -> Program:
    """A closed program ready to send: header features cover definitions, then lowered."""
    return lower_syntax(fold_definition_features(program))


def fold_definition_features(program: Program) -> Program:
    """``program`` whose header ``min_python``/``features`` also count its Definitions' code.

    A definition's feature is reported at its line in the definition's own file
    (``loc.line`` numbering); a feature already reported by a unit keeps the unit's line.
    """
    if not program.definitions:
        return program
    from ..frontend.features import detect_features

    header = program.header
    features = list(header.features)
    names = {name for name, _ in features}
    min_python = tuple(header.min_python)
    for d in program.definitions:
        if d.kind == DEF_MODULE or not d.source.strip():  # a module's source is only a comment
            continue
        try:
            version, found = detect_features(d.source)
        except Exception:  # not parseable by libcst: leave it to the runtime's parse
            continue
        min_python = max(min_python, tuple(version))
        for name, line in found:
            if name not in names:
                names.add(name)
                features.append((name, line + d.loc.line - 1))
    if min_python == tuple(header.min_python) and len(features) == len(header.features):
        return program
    return dataclasses.replace(program, header=dataclasses.replace(
        header, min_python=min_python, features=tuple(features)))


def lower_syntax(program: Program) -> Program:
    """``program`` with every lowerable syntax feature lowered (same object if nothing to do)."""
    names = {name for name, _ in program.header.features}
    todo = [name for name in PASSES if name in names]
    if not todo:
        return program
    units, definitions = list(program.units), list(program.definitions)
    dropped = set()
    for name in todo:
        lower = _pass(name)
        left = 0
        for i, u in enumerate(units):
            source, n = lower(u.source)
            left += n
            units[i] = dataclasses.replace(u, source=source)
        for i, d in enumerate(definitions):
            source, n = lower(d.source)
            left += n
            definitions[i] = dataclasses.replace(d, source=source)
        if not left:
            dropped.add(name)
    header = program.header
    if dropped:
        from ..frontend.features import features_table

        versions = dict(features_table())
        features = tuple(f for f in header.features if f[0] not in dropped)
        min_python = tuple(header.min_python)
        listed = [versions.get(name) for name, _ in header.features]
        # Recompute only when the listed features explain the old level entirely.
        if None not in listed and min_python == max([tuple(MIN_PYTHON)] + listed):
            min_python = max([tuple(MIN_PYTHON)] + [versions[name] for name, _ in features])
        header = dataclasses.replace(header, features=features, min_python=tuple(min_python))
    return dataclasses.replace(program, header=header, units=tuple(units), definitions=tuple(definitions))
