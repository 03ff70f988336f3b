"""The scope model and name-resolution rules shared by both name analyses.

:mod:`compiler.frontend.names` walks libcst nodes and
:mod:`compiler.frontend.fast_names` walks ``ast`` nodes; both record reads and
stores through :class:`ScopeTracker` and resolve free names with its rules, so
the two paths agree by construction. This module imports neither parser.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Set, Tuple

Pos = Tuple[int, int]

MODULE, FUNCTION, CLASS, COMPREHENSION = "module", "function", "class", "comprehension"


class Scope:
    def __init__(
        self, kind: str, parent: Optional["Scope"], done: Pos = (0, 0), blocks: Tuple[int, ...] = ()
    ) -> None:
        self.kind = kind
        self.parent = parent
        self.done = done  # where a function/lambda definition completes
        self.blocks = blocks  # enclosing blocks of that definition
        self.stores: Dict[str, List[Pos]] = {}
        self.global_decls: Set[str] = set()
        self.nonlocal_decls: Set[str] = set()


class NameAnalysis:
    """Free names of a root unit and the names each unit assigns."""

    def __init__(self, free: List[str], assigned: Dict[int, Tuple[str, ...]]) -> None:
        self.free = free
        self.assigned = assigned


class ScopeTracker:
    """Reads and stores seen by a walker, and the rules that resolve them.

    Subclasses walk a syntax tree, maintain ``scope`` / ``blocks`` / ``units``
    and call :meth:`store` and ``reads.append``; :meth:`free_names` then gives
    the free names in order of first read.
    """

    def __init__(self, root_unit: int) -> None:
        self.module = Scope(MODULE, None)
        self.scope = self.module
        self.blocks: List[int] = [0]  # enclosing blocks, innermost last
        self.block_count = 1
        self.stmt_end: Pos = (0, 0)
        self.units: List[int] = [root_unit]
        self.assigned: Dict[int, Set[str]] = {root_unit: set()}
        self.reads: List[Tuple[str, Scope, Pos, Tuple[int, ...]]] = []
        self.definite: Dict[str, List[Tuple[Pos, int]]] = {}

    def store(self, name: str, pos: Pos, definite: bool = False) -> None:
        scope = self.scope
        if scope.kind != MODULE and name in scope.global_decls:
            scope = self.module
            definite = False
        elif scope.kind != MODULE and name in scope.nonlocal_decls:
            return
        scope.stores.setdefault(name, []).append(pos)
        if scope is self.module:
            for u in self.units:
                self.assigned[u].add(name)
            if definite and self.scope is self.module:
                self.definite.setdefault(name, []).append((pos, self.blocks[-1]))

    def declare_local(self, name: str) -> None:
        """A name made local without a value (``x: int``, ``del x``)."""
        if self.scope.kind != MODULE:
            self.scope.stores.setdefault(name, [])

    # -- resolution --------------------------------------------------------
    def _is_global(self, name: str, scope: Scope, pos: Pos) -> bool:
        direct = True
        s = scope
        while s.kind != MODULE:
            if name in s.global_decls:
                return True
            if name in s.nonlocal_decls:
                return False
            if s.kind == CLASS:
                if direct and any(p <= pos for p in s.stores.get(name, ())):
                    return False
            elif name in s.stores:
                return False
            direct = False
            s = s.parent  # type: ignore[assignment]
        return True

    @staticmethod
    def _effective(scope: Scope, pos: Pos, blocks: Tuple[int, ...]) -> Tuple[Pos, Tuple[int, ...]]:
        """When and where a read happens: a function body runs after its definition."""
        s = scope
        while s.kind != MODULE:
            if s.kind == FUNCTION:
                pos, blocks = s.done, s.blocks
            s = s.parent  # type: ignore[assignment]
        return pos, blocks

    def _covered(self, name: str, scope: Scope, pos: Pos, blocks: Tuple[int, ...]) -> bool:
        stores = self.definite.get(name)
        if not stores:
            return False
        pos, blocks = self._effective(scope, pos, blocks)
        return any(p <= pos and b in blocks for p, b in stores)

    def free_names(self) -> List[str]:
        first: Dict[str, Pos] = {}
        for name, scope, pos, blocks in self.reads:
            if not self._is_global(name, scope, pos) or self._covered(name, scope, pos, blocks):
                continue
            if name not in first or pos < first[name]:
                first[name] = pos
        return sorted(first, key=lambda n: first[n])

