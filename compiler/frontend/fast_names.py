"""Name analysis on Python's ``ast`` (fast path of :mod:`compiler.frontend.names`).

Same rules and same results as :func:`compiler.frontend.names.analyze_names`,
which walks libcst nodes; this walks ``ast`` statements. Positions are
``(line, column)`` pairs from ``ast`` (UTF-8 byte columns): they are only
compared with one another, and byte columns order a line like characters do.
Where ``ast`` has no position (an ``except ... as name`` name, a mapping
pattern's ``**rest``) a position between the name and the first read that
could follow it is used, which orders the same way.

Raises :class:`Decline` for constructs this walker does not mirror exactly
(PEP 695 type parameters and ``type`` statements); the caller then uses the
libcst path.
"""
from __future__ import annotations

import ast
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

from .scopes import (  # noqa: F401  (shared scope model and rules)
    CLASS,
    COMPREHENSION,
    FUNCTION,
    MODULE,
    NameAnalysis,
    Pos,
    Scope as _Scope,
    ScopeTracker,
)




class Decline(Exception):
    """The fast path cannot promise the libcst path's result."""


def _start(node) -> Pos:
    return node.lineno, node.col_offset


def _end(node) -> Pos:
    return node.end_lineno, node.end_col_offset


_SIMPLE = frozenset(
    (
        "Assign", "AnnAssign", "AugAssign", "Expr", "Delete", "Pass", "Break", "Continue", "Return",
        "Raise", "Global", "Nonlocal", "Import", "ImportFrom", "Assert",
    )
)


_AST = ast.AST
_HANDLERS: dict = {}  # node type -> (_Walker.v_<type> or None, a simple statement?)


def visit_children(node, visit) -> None:
    """``visit`` each child of ``node`` in ``ast.iter_child_nodes`` order (without its generators)."""
    for field in node._fields:
        value = getattr(node, field, None)
        if isinstance(value, _AST):
            visit(value)
        elif type(value) is list:
            for item in value:
                if isinstance(item, _AST):
                    visit(item)


def analyze_names_ast(
    body: Sequence[ast.stmt], unit_of: Mapping[int, int], root_unit: int = 0
) -> NameAnalysis:
    """Analyse the statements ``body`` of the root unit (``unit_of``: ``id(with node)`` -> unit id)."""
    w = _Walker(unit_of, root_unit)
    w.visit_list(body)
    return NameAnalysis(w.free_names(), {u: tuple(sorted(s)) for u, s in w.assigned.items()})


class _Walker(ScopeTracker):
    def __init__(self, unit_of: Mapping[int, int], root_unit: int) -> None:
        self.unit_of = unit_of
        super().__init__(root_unit)

    # -- recording (as in names._Walker) -------------------------------------
    def read(self, name: str, pos: Pos) -> None:
        self.reads.append((name, self.scope, pos, tuple(self.blocks)))

    def store_target(self, target, pos: Pos, definite: bool = False) -> None:
        if isinstance(target, ast.Name):
            self.store(target.id, pos, definite)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for el in target.elts:
                self.store_target(el, pos, definite)
        elif isinstance(target, ast.Starred):
            self.store_target(target.value, pos, definite)
        else:
            self.visit(target)

    # -- traversal -----------------------------------------------------------------
    def visit(self, node) -> None:
        kind = type(node)
        try:
            handler, simple = _HANDLERS[kind]
        except KeyError:
            handler, simple = _HANDLERS[kind] = (getattr(_Walker, "v_" + kind.__name__, None),
                                                 kind.__name__ in _SIMPLE)
        if simple:
            saved = self.stmt_end
            self.stmt_end = _end(node)
            try:
                if handler is not None:
                    handler(self, node)
                else:
                    self._children(node)
            finally:
                self.stmt_end = saved
        elif handler is not None:
            handler(self, node)
        else:
            self._children(node)

    def _children(self, node) -> None:
        visit_children(node, self.visit)

    def visit_list(self, nodes) -> None:
        for n in nodes:
            self.visit(n)

    def block(self, node, targets=()) -> None:
        """``node``: a statement list (empty: no block) or a handler / case."""
        if node is None or (isinstance(node, list) and not node):
            return
        self.blocks.append(self.block_count)
        self.block_count += 1
        try:
            for t in targets:
                self.store_target(t, _end(t), definite=True)
            if isinstance(node, list):
                self.visit_list(node)
            else:
                self.visit(node)
        finally:
            self.blocks.pop()

    def v_Name(self, node) -> None:
        self.read(node.id, _start(node))

    def v_Attribute(self, node) -> None:
        self.visit(node.value)

    def v_Constant(self, node) -> None:  # (no names; a handler is cheaper than the generic walk)
        pass

    v_Load = v_Store = v_Del = v_Constant

    def v_keyword(self, node) -> None:
        self.visit(node.value)

    # statements
    def v_Assign(self, node) -> None:
        self.visit(node.value)
        for t in node.targets:
            self.store_target(t, self.stmt_end, definite=True)

    def v_AnnAssign(self, node) -> None:
        self.visit(node.annotation)
        if node.value is not None:
            self.visit(node.value)
            self.store_target(node.target, self.stmt_end, definite=True)
        elif isinstance(node.target, ast.Name):
            self.declare_local(node.target.id)
        else:
            self.visit(node.target)

    def v_AugAssign(self, node) -> None:
        self.visit(node.target)  # read first (a Name target reads itself)
        self.visit(node.value)
        if isinstance(node.target, ast.Name):
            self.store(node.target.id, self.stmt_end, definite=True)

    def v_Delete(self, node) -> None:
        for t in node.targets:
            self._del_target(t)

    def _del_target(self, target) -> None:
        if isinstance(target, ast.Name):
            self.read(target.id, _start(target))
            self.declare_local(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for el in target.elts:
                self._del_target(el)
        else:
            self.visit(target)

    def v_Import(self, node) -> None:
        for alias in node.names:
            if alias.asname is not None:
                self.store(alias.asname, self.stmt_end, definite=True)
            else:
                self.store(alias.name.split(".")[0], self.stmt_end, definite=True)

    def v_ImportFrom(self, node) -> None:
        for alias in node.names:
            if alias.name == "*":
                return
        for alias in node.names:
            self.store(alias.asname if alias.asname is not None else alias.name, self.stmt_end, definite=True)

    def v_Global(self, node) -> None:
        self.scope.global_decls.update(node.names)

    def v_Nonlocal(self, node) -> None:
        self.scope.nonlocal_decls.update(node.names)

    def v_If(self, node) -> None:
        self.visit(node.test)
        self.block(node.body)
        self.block(node.orelse)

    v_While = v_If

    def v_For(self, node) -> None:
        self.visit(node.iter)
        self.block(node.body, [node.target])
        self.block(node.orelse)

    v_AsyncFor = v_For

    def v_With(self, node) -> None:
        for item in node.items:
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                self.store_target(item.optional_vars, _end(item.optional_vars), definite=True)
        unit = self.unit_of.get(id(node)) if self.scope is self.module else None
        if unit is not None:
            self.units.append(unit)
            self.assigned.setdefault(unit, set())
        try:
            self.block(node.body)
        finally:
            if unit is not None:
                self.units.pop()

    v_AsyncWith = v_With

    def v_Try(self, node) -> None:
        self.block(node.body)
        for h in node.handlers:
            self.block(h)
        self.block(node.orelse)
        self.block(node.finalbody)

    v_TryStar = v_Try

    def v_ExceptHandler(self, node) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name is not None:
            # no position for the name: the body's start orders like the name's end
            first = node.body[0]
            decorators = getattr(first, "decorator_list", None)
            self.store(node.name, _start(decorators[0] if decorators else first), definite=True)
        self.visit_list(node.body)

    def v_Match(self, node) -> None:
        self.visit(node.subject)
        for case in node.cases:
            self.block(case)

    def v_match_case(self, node) -> None:
        self.visit(node.pattern)
        if node.guard is not None:
            self.visit(node.guard)
        self.visit_list(node.body)

    def v_MatchAs(self, node) -> None:
        if node.pattern is not None:
            self.visit(node.pattern)
        if node.name is not None:
            self.store(node.name, _end(node), definite=True)

    def v_MatchStar(self, node) -> None:
        if node.name is not None:
            self.store(node.name, _end(node), definite=True)

    def v_MatchMapping(self, node) -> None:
        for k in node.keys:
            self.visit(k)
        for p in node.patterns:
            self.visit(p)
        if node.rest is not None:
            self.store(node.rest, _end(node), definite=True)

    def v_MatchClass(self, node) -> None:
        self.visit(node.cls)
        for p in node.patterns:
            self.visit(p)
        for p in node.kwd_patterns:
            self.visit(p)

    # definitions
    @staticmethod
    def _params(args: ast.arguments) -> List[ast.arg]:
        out = list(args.posonlyargs) + list(args.args) + list(args.kwonlyargs)
        if args.vararg is not None:
            out.append(args.vararg)
        if args.kwarg is not None:
            out.append(args.kwarg)
        return out

    @staticmethod
    def _defaults(args: ast.arguments) -> list:
        return list(args.defaults) + [d for d in args.kw_defaults if d is not None]

    def v_FunctionDef(self, node) -> None:
        if getattr(node, "type_params", None):
            raise Decline("type parameters")
        done = _end(node)
        self.visit_list(node.decorator_list)
        params = self._params(node.args)
        self.visit_list(self._defaults(node.args))
        outer = self.scope
        try:
            for p in params:
                if p.annotation is not None:
                    self.visit(p.annotation)
            if node.returns is not None:
                self.visit(node.returns)
            fscope = _Scope(FUNCTION, self.scope, done, tuple(self.blocks))
            for p in params:
                fscope.stores.setdefault(p.arg, [])
            self.scope = fscope
            self.visit_list(node.body)
        finally:
            self.scope = outer
        self.store(node.name, done, definite=True)

    v_AsyncFunctionDef = v_FunctionDef

    def v_ClassDef(self, node) -> None:
        if getattr(node, "type_params", None):
            raise Decline("type parameters")
        done = _end(node)
        self.visit_list(node.decorator_list)
        outer = self.scope
        try:
            self.visit_list(node.bases)
            self.visit_list(node.keywords)
            self.scope = _Scope(CLASS, self.scope, done)
            self.visit_list(node.body)
        finally:
            self.scope = outer
        self.store(node.name, done, definite=True)

    def v_TypeAlias(self, node) -> None:
        raise Decline("type alias")

    def v_Lambda(self, node) -> None:
        params = self._params(node.args)
        self.visit_list(self._defaults(node.args))
        outer = self.scope
        scope = _Scope(FUNCTION, outer, _end(node), tuple(self.blocks))
        for p in params:
            scope.stores.setdefault(p.arg, [])
        self.scope = scope
        try:
            self.visit(node.body)
        finally:
            self.scope = outer

    # comprehensions
    def _comprehension(self, generators, results) -> None:
        self.visit(generators[0].iter)
        outer = self.scope
        self.scope = _Scope(COMPREHENSION, outer)
        try:
            for i, comp in enumerate(generators):
                if i:
                    self.visit(comp.iter)
                self.store_target(comp.target, _end(comp.target))
                for cond in comp.ifs:
                    self.visit(cond)
            for r in results:
                self.visit(r)
        finally:
            self.scope = outer

    def v_ListComp(self, node) -> None:
        self._comprehension(node.generators, [node.elt])

    v_SetComp = v_ListComp
    v_GeneratorExp = v_ListComp

    def v_DictComp(self, node) -> None:
        self._comprehension(node.generators, [node.key, node.value])

    def v_NamedExpr(self, node) -> None:
        self.visit(node.value)
        scope = self.scope
        while scope.kind == COMPREHENSION and scope.parent is not None:
            scope = scope.parent
        saved, self.scope = self.scope, scope
        try:
            self.store_target(node.target, _end(node))
        finally:
            self.scope = saved

    # 3.14 template strings: not mirrored
    def v_TemplateStr(self, node) -> None:
        raise Decline("template string")
