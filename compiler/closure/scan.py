"""What a piece of source reads: free global names, attribute chains, imports, positions.

Free names follow the frontend's scoping rules (:mod:`compiler.frontend.names`,
libcst); attribute chains, imports and first-use positions come from one
:mod:`ast` walk. Results are cached per source text. Positions are in the
source's own coordinates: 1-based line, 0-based character column.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, List, Optional, Set, Tuple

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from ..frontend.names import analyze_names
from ..frontend.parse import PARSER_CONFIG, Region
from ..unresolved import IMPORT_GUARDS

Pos = Tuple[int, int, int]  # line, column, length
Chain = Tuple[str, ...]


@dataclass(frozen=True)
class ImportFact:
    """One imported module: ``import a.b as c`` / ``from .a import x, y``."""

    module: str  # as written (without the leading dots)
    level: int  # number of leading dots (relative imports)
    names: Tuple[Tuple[str, str], ...]  # from-import: (name, bound name); () for ``import``
    bound: str  # ``import``: the name it binds (``c``, or ``a`` for ``import a.b``)
    pos: Pos
    guarded: bool = False  # inside ``try:`` with a handler catching ImportError: the code's own fallback


@dataclass
class SourceFacts:
    free: List[str]
    positions: Dict[str, Pos] = field(default_factory=dict)
    chains: Dict[str, Set[Chain]] = field(default_factory=dict)
    chain_positions: Dict[Tuple[str, Chain], Pos] = field(default_factory=dict)
    bare: Set[str] = field(default_factory=set)
    imports: List[ImportFact] = field(default_factory=list)


class _NoAnnotations(cst.CSTTransformer):
    """Annotations are strings under ``from __future__ import annotations``: drop their names."""

    def leave_Annotation(self, original: cst.Annotation, updated: cst.Annotation) -> cst.Annotation:
        return updated.with_changes(annotation=cst.Name("None"))


@lru_cache(maxsize=4096)
def analyze(source: str, expression: bool = False, lazy_annotations: bool = False) -> SourceFacts:
    """Facts about ``source``: statements, or one expression (a lambda) when ``expression``."""
    text = "(" + source.rstrip("\n") + ")\n" if expression else source
    module = cst.parse_module(text, config=PARSER_CONFIG)
    if lazy_annotations:
        module = module.visit(_NoAnnotations())
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    region = Region(wrapper.module, wrapper.resolve(PositionProvider), 0)
    free = analyze_names(region, list(region.module.body), {}).free
    facts = SourceFacts(free=list(free))
    _AstFacts(text, facts, 1 if expression else 0).visit(ast.parse(text))
    return facts


class _AstFacts(ast.NodeVisitor):
    def __init__(self, text: str, facts: SourceFacts, shift: int):
        self.lines = text.split("\n")
        self.facts = facts
        self.shift = shift  # columns added on line 1 (the parenthesis around an expression)
        self.guarded = 0  # depth of ``try:`` bodies whose handlers catch ImportError

    def pos(self, node: ast.AST) -> Pos:
        line = node.lineno
        text = self.lines[line - 1] if line - 1 < len(self.lines) else ""
        col = _char(text, node.col_offset)
        if getattr(node, "end_lineno", line) == line:
            length = _char(text, node.end_col_offset) - col
        else:
            length = len(text) - col
        if line == 1:
            col -= self.shift
        return line, max(col, 0), max(length, 1)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.facts.bare.add(node.id)
            self.facts.positions.setdefault(node.id, self.pos(node))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain: List[str] = []
        base: ast.AST = node
        while isinstance(base, ast.Attribute):
            chain.append(base.attr)
            base = base.value
        if isinstance(base, ast.Name):
            chain.reverse()
            key = tuple(chain)
            self.facts.chains.setdefault(base.id, set()).add(key)
            self.facts.chain_positions.setdefault((base.id, key), self.pos(node))
            self.facts.positions.setdefault(base.id, self.pos(base))
        else:
            self.visit(base)

    def visit_Try(self, node: ast.Try) -> None:
        if not any(_catches_import_error(h.type) for h in node.handlers):
            self.generic_visit(node)
            return
        self.guarded += 1
        for stmt in node.body:
            self.visit(stmt)
        self.guarded -= 1
        for part in (*node.handlers, *node.orelse, *node.finalbody):
            self.visit(part)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            bound = alias.asname or alias.name.split(".")[0]
            self.facts.imports.append(ImportFact(alias.name, 0, (), bound, self.pos(node), self.guarded > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        names = tuple((a.name, a.asname or a.name) for a in node.names)
        self.facts.imports.append(ImportFact(node.module or "", node.level or 0, names, "", self.pos(node),
                                             self.guarded > 0))


def _catches_import_error(handler_type: Optional[ast.expr]) -> bool:
    """Whether ``except <handler_type>:`` catches a failed import (bare ``except:`` does)."""
    if handler_type is None:
        return True
    if isinstance(handler_type, ast.Tuple):
        return any(_catches_import_error(e) for e in handler_type.elts)
    if isinstance(handler_type, ast.Attribute):
        return handler_type.attr in IMPORT_GUARDS
    return isinstance(handler_type, ast.Name) and handler_type.id in IMPORT_GUARDS


def _char(text: str, byte_col: int) -> int:
    if text.isascii():
        return byte_col
    return len(text.encode("utf-8")[:byte_col].decode("utf-8", "replace"))


def resolve_import(fact: ImportFact, package: Optional[str]) -> Optional[str]:
    """The absolute module name of an import, relative ones resolved against ``package``."""
    if not fact.level:
        return fact.module
    if not package:
        return None
    parts = package.split(".")
    if fact.level - 1 >= len(parts):
        return None
    base = parts[: len(parts) - (fact.level - 1)]
    return ".".join(base + ([fact.module] if fact.module else []))
