"""Lower a tracing with-block of a source text to an IR :class:`Program`.

Unit 0 (UNIT_TRACE) is the body of the with-statement whose header covers the
given line. Every (non-async) with-statement nested in it -- at any depth
inside if/for/while/try/with/match, but not inside def/class/lambda -- becomes
a UNIT_BLOCK child unit; ids are pre-order indices and ``parent`` is the
innermost enclosing unit. A child's statements also stay inline in its
parent's source: the runtime chooses at run time.

Per unit: ``header`` is the ``(with line, colon line)`` range of its
with-header and ``loc``/``source`` follow :mod:`compiler.frontend.dedent`; all
line numbers are user-file lines. ``assigned`` and the program's bindings
follow :mod:`compiler.frontend.names`. ``envoys``/``dynamic``/``dynamic_names``
come from the access report of the root unit (:mod:`compiler.frontend.accesses`),
a unit whose with-header calls ``.invoke(...)`` has the ``invoke`` fact, and
``target`` is the with-statement's first plain-name ``as`` target.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import libcst as cst

from ..ir.nodes import (BIND_RUNTIME, FACT_BACKWARD, FACT_INVOKE, UNIT_BLOCK, UNIT_TRACE, Binding, CodeUnit, Header,
                        Program, SourceLoc)
from ..ir.version import producer_nnsight, producer_python
from ..passes import lower_syntax
from .accesses import scan_accesses
from .dedent import body_source, string_lines
from .features import scan_features
from .locate import header_range, locate_with
from .names import analyze_names

_SCOPES = (cst.FunctionDef, cst.ClassDef, cst.Lambda)


def nested_withs(node: cst.CSTNode, parent: int, out: List[Tuple[cst.With, Optional[int]]]) -> None:
    """Append ``(with, parent id)`` for the with-statements under ``node`` in pre-order."""
    for child in node.children:
        if isinstance(child, _SCOPES):
            continue
        if isinstance(child, cst.With) and child.asynchronous is None:
            out.append((child, parent))
            nested_withs(child.body, len(out) - 1, out)
        else:
            nested_withs(child, parent, out)


def as_target(node: cst.With) -> Optional[str]:
    """The first plain-name ``as`` target of the with-statement ``node`` (None if absent)."""
    for item in node.items:
        if item.asname is not None and isinstance(item.asname.name, cst.Name):
            return item.asname.name.value
    return None


def header_calls(node: cst.With, method: str) -> bool:
    """Does the with-header of ``node`` call ``<something>.<method>(...)`` anywhere in its items?"""
    stack: List[cst.CSTNode] = [item.item for item in node.items]
    while stack:
        sub = stack.pop()
        if isinstance(sub, cst.Call) and isinstance(sub.func, cst.Attribute) and sub.func.attr.value == method:
            return True
        stack.extend(sub.children)
    return False


def unit_facts(node: cst.With) -> Tuple[str, ...]:
    """The facts of a nested unit, from its with-header (``FACT_LOCAL`` is added later, by
    :mod:`.local_blocks`, which also needs the names the block reads)."""
    return tuple(fact for fact, method in ((FACT_INVOKE, "invoke"), (FACT_BACKWARD, "backward"))
                 if header_calls(node, method))


def lower(text: str, filename: str, lineno: int, *, first_line: int = 1) -> Program:
    """Compile the with-block whose header covers user line ``lineno`` of ``text``.

    ``text``'s first line is user line ``first_line``. Raises
    :class:`~compiler.frontend.errors.FrontendError` subclasses.
    """
    located = locate_with(text, lineno, first_line=first_line, filename=filename)
    region = located.region
    shift = first_line - 1
    verbatim = string_lines(region)

    found: List[Tuple[cst.With, Optional[int]]] = [(located.node, None)]
    nested_withs(located.node.body, 0, found)
    unit_of = {node: i for i, (node, _) in enumerate(found)}
    names = analyze_names(region, [located.node.body], unit_of)

    units = []
    for uid, (node, parent) in enumerate(found):
        source, first, col = body_source(region, located.lines, node.body, verbatim)
        first_header, last_header = header_range(region, node)
        units.append(
            CodeUnit(
                id=uid,
                kind=UNIT_TRACE if parent is None else UNIT_BLOCK,
                source=source,
                loc=SourceLoc(filename, first + shift, col),
                parent=parent,
                header=(first_header + shift, last_header + shift),
                assigned=names.assigned.get(uid, ()),
                target=as_target(node),
                facts=unit_facts(node) if parent is not None else (),
            )
        )

    min_python, features = scan_features([located.node.body], lambda n: region.start(n)[0] + shift)
    header = Header(
        producer="nnsight " + producer_nnsight(),
        python=producer_python(),
        min_python=min_python,
        features=features,
    )
    program = Program(
        header=header,
        units=tuple(units),
        bindings=tuple(Binding(name, BIND_RUNTIME) for name in names.free),
        **scan_accesses(units[0].source).ir_fields(),
    )
    # Lower what older runtimes cannot parse (header.min_python then reflects the result).
    from .local_blocks import mark_local_blocks

    return mark_local_blocks(lower_syntax(program))
