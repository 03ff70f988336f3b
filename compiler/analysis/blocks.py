"""Find the tracing with-blocks of a script statically (for ``nnsight-compile emit``).

A with-statement is a tracing block when one of its context expressions is a
call of a method in :data:`compiler.analysis.rules.TRACING_METHODS`
(``model.trace(...)``, ``model.generate(...)``, ``model.session(...)``...).
A tracing block nested in another one is a unit of the outer program, so only
the outermost ones are returned -- except inside a def/class/lambda body,
which the frontend never lowers as part of the enclosing block.
"""
from __future__ import annotations

from typing import List

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from ..frontend.parse import PARSER_CONFIG
from .rules import TRACING_METHODS

_SCOPES = (cst.FunctionDef, cst.ClassDef, cst.Lambda)


def is_tracing(node: cst.With) -> bool:
    for item in node.items:
        call = item.item
        if isinstance(call, cst.Call) and isinstance(call.func, cst.Attribute) \
                and call.func.attr.value in TRACING_METHODS:
            return True
    return False


def tracing_blocks(text: str) -> List[int]:
    """First lines (1-based) of the outermost tracing with-statements, in source order.

    Raises libcst.ParserSyntaxError when ``text`` does not parse.
    """
    wrapper = MetadataWrapper(cst.parse_module(text, config=PARSER_CONFIG), unsafe_skip_copy=True)
    positions = wrapper.resolve(PositionProvider)
    lines: List[int] = []
    stack = [(wrapper.module, False)]
    while stack:
        node, inside = stack.pop()
        if isinstance(node, _SCOPES):
            inside = False
        elif isinstance(node, cst.With) and node.asynchronous is None and is_tracing(node):
            if not inside:
                lines.append(positions[node].start.line)
            inside = True
        stack.extend((child, inside) for child in reversed(node.children))
    return sorted(lines)
