"""Syntax features that raise the minimum Python version of a program.

:data:`FEATURES` is the table: ``(name, (major, minor), node type, predicate)``.
A node of that libcst type for which the predicate holds (or any such node
when it is None) uses the feature. Features at or below the project floor
(:data:`compiler.ir.version.MIN_PYTHON`, 3.9) are listed for documentation but
never reported. ``X | Y`` in annotations is not syntax (it is a runtime
operation) and is not listed.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from ..ir.version import MIN_PYTHON
from .parse import parse_module

Version = Tuple[int, int]


def _code(node: cst.CSTNode) -> str:
    return cst.Module([]).code_for_node(node)


def _parenthesized_with(node: cst.With) -> bool:
    # "with (a):" / "with (a) as b:" are plain parenthesized expressions
    if not isinstance(node.lpar, cst.LeftParen):
        return False
    items = node.items
    return len(items) > 1 or any(i.asname is not None for i in items) or isinstance(items[-1].comma, cst.Comma)


def _fstring_needs_312(node: cst.FormattedString) -> bool:
    """PEP 701: quote reuse, backslashes, comments, or (single-quoted) newlines in replacement fields."""
    quote = node.start.lstrip("rRfFbBuU")
    parts = list(node.parts)
    while parts:
        part = parts.pop()
        if isinstance(part, cst.FormattedStringExpression):
            text = _code(part.with_changes(format_spec=None))  # whitespace/comments included
            if quote in text or "\\" in text or "#" in text:
                return True
            if len(quote) == 1 and "\n" in text:
                return True
            if part.format_spec:
                parts.extend(part.format_spec)
    return False


def _type_params(node) -> bool:
    return getattr(node, "type_parameters", None) is not None


def _type_param_default(node) -> bool:
    return getattr(node, "default", None) is not None


def _star_index(node) -> bool:
    return getattr(node, "star", None) is not None


def _posonly(node: cst.Parameters) -> bool:
    return bool(node.posonly_params) or isinstance(node.posonly_ind, cst.ParamSlash)


Predicate = Optional[Callable[[cst.CSTNode], bool]]

FEATURES: Tuple[Tuple[str, Version, str, Predicate], ...] = (
    ("assignment expression", (3, 8), "NamedExpr", None),
    ("positional-only parameters", (3, 8), "Parameters", _posonly),
    ("match statement", (3, 10), "Match", None),
    ("parenthesized context managers", (3, 10), "With", _parenthesized_with),
    ("except*", (3, 11), "TryStar", None),
    ("star expression in subscript", (3, 11), "Index", _star_index),
    ("type parameters", (3, 12), "FunctionDef", _type_params),
    ("type parameters", (3, 12), "ClassDef", _type_params),
    ("type alias statement", (3, 12), "TypeAlias", None),
    ("f-string nesting (PEP 701)", (3, 12), "FormattedString", _fstring_needs_312),
    ("type parameter defaults", (3, 13), "TypeParam", _type_param_default),
)

_BY_TYPE: Dict[str, List[Tuple[str, Version, Predicate]]] = {}
for _name, _version, _type, _pred in FEATURES:
    if _version > MIN_PYTHON:
        _BY_TYPE.setdefault(_type, []).append((_name, _version, _pred))


def scan_features(nodes: Iterable[cst.CSTNode], line_of: Callable[[cst.CSTNode], int]):
    """``(min_python, ((feature, line), ...))`` for the given subtrees.

    Each feature is reported once, at its first line; ``line_of`` maps a node
    to the line number to report.
    """
    found: Dict[str, Tuple[int, Version]] = {}
    stack = list(nodes)
    while stack:
        node = stack.pop()
        for name, version, pred in _BY_TYPE.get(type(node).__name__, ()):
            if pred is None or pred(node):
                line = line_of(node)
                if name not in found or line < found[name][0]:
                    found[name] = (line, version)
        stack.extend(node.children)
    min_python = max([MIN_PYTHON] + [v for _, v in found.values()])
    features = tuple(sorted(((n, l) for n, (l, _) in found.items()), key=lambda f: (f[1], f[0])))
    return min_python, features


def detect_features(module_or_source: Union[str, cst.Module]):
    """``(min_python, ((feature, line), ...))`` of a module or source text."""
    module = parse_module(module_or_source) if isinstance(module_or_source, str) else module_or_source
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    positions = wrapper.resolve(PositionProvider)
    return scan_features([wrapper.module], lambda n: positions[n].start.line)


def features_table() -> Sequence[Tuple[str, Version]]:
    """The documented table as ``(name, version)`` pairs (floor features included)."""
    return [(name, version) for name, version, _, _ in FEATURES]
