"""Name analysis of a unit body: free names (bindings) and assigned names.

The body is analysed as the global scope of a module (units run as module-level
code). Python's scoping rules are followed: function and lambda scopes own
their parameters and the names they bind (unless declared ``global`` /
``nonlocal``), comprehension scopes own their targets (the first iterable is
evaluated outside; a walrus binds in the enclosing non-comprehension scope),
class bodies do not enclose the functions defined in them, decorators /
defaults / bases are evaluated in the enclosing scope.

Free names: every name read (or deleted) whose read resolves to the global
scope, in order of first occurrence, unless every such read is covered by a
*definite* earlier binding in the global scope. A binding covers a read when it
completed before the read (an assignment completes at the end of its
statement) in the same block or an enclosing one. Blocks are the unit body and
every if/elif/else, loop, try/except/else/finally, with and case body. Definite
bindings are assignments, augmented assignments, imports, def/class, and the
targets a block binds when it starts (for-targets and except-as names for
their body, match captures for their case, with-as targets from the header
on); walrus targets are never definite. Reads inside a function or lambda body
count as happening when the outermost such definition completes. ``None``,
``True`` and ``False`` are not names; builtins are (the runtime decides). The
rule is conservative: a name that may be read before it is bound is free.

Assigned names of a unit: names bound in the unit's global scope anywhere in
it (inside compound statements and nested with-bodies too, ``global`` names of
nested functions included).
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

import libcst as cst

from .parse import Region
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



_KEYWORDS = frozenset(("None", "True", "False"))  # Name nodes in libcst, not variables


def analyze_names(
    region: Region, body: Sequence[cst.CSTNode], unit_of: Mapping[cst.With, int], root_unit: int = 0
) -> NameAnalysis:
    """Analyse the statements ``body`` of the root unit.

    ``unit_of`` maps nested with-statements to their unit ids, so that names
    bound inside them are also reported as assigned by those units.
    """
    w = _Walker(region, unit_of, root_unit)
    for stmt in body:
        w.visit(stmt)
    return NameAnalysis(w.free_names(), {u: tuple(sorted(s)) for u, s in w.assigned.items()})


class _Walker(ScopeTracker):
    def __init__(self, region: Region, unit_of: Mapping[cst.With, int], root_unit: int) -> None:
        self.region = region
        self.unit_of = unit_of
        super().__init__(root_unit)

    # -- recording ---------------------------------------------------------
    def read(self, name: str, node: cst.CSTNode) -> None:
        if name not in _KEYWORDS:
            self.reads.append((name, self.scope, self.region.start(node), tuple(self.blocks)))

    def store_target(self, target: cst.CSTNode, pos: Pos, definite: bool = False) -> None:
        if isinstance(target, cst.Name):
            self.store(target.value, pos, definite)
        elif isinstance(target, (cst.Tuple, cst.List)):
            for el in target.elements:
                self.store_target(el.value, pos, definite)
        elif isinstance(target, (cst.StarredElement, cst.Element)):
            self.store_target(target.value, pos, definite)
        else:  # attribute / subscript targets read their base
            self.visit(target)

    # -- traversal ---------------------------------------------------------
    def visit(self, node: cst.CSTNode) -> None:
        handler = getattr(self, "v_" + type(node).__name__, None)
        if handler is not None:
            handler(node)
        else:
            for child in node.children:
                self.visit(child)

    def block(self, node: Optional[cst.CSTNode], targets: Sequence[cst.CSTNode] = ()) -> None:
        """Visit a block that may not run; ``targets`` are bound when it starts."""
        if node is None:
            return
        self.blocks.append(self.block_count)
        self.block_count += 1
        try:
            for t in targets:
                self.store_target(t, self.region.end(t), definite=True)
            self.visit(node)
        finally:
            self.blocks.pop()

    def v_Name(self, node: cst.Name) -> None:
        self.read(node.value, node)

    def v_Attribute(self, node: cst.Attribute) -> None:
        self.visit(node.value)

    def v_Arg(self, node: cst.Arg) -> None:
        self.visit(node.value)

    # statements
    def _small_statements(self, node) -> None:
        for small in node.body:
            saved = self.stmt_end
            self.stmt_end = self.region.end(small)
            try:
                self.visit(small)
            finally:
                self.stmt_end = saved

    v_SimpleStatementLine = _small_statements
    v_SimpleStatementSuite = _small_statements

    def v_Assign(self, node: cst.Assign) -> None:
        self.visit(node.value)
        for t in node.targets:
            self.store_target(t.target, self.stmt_end, definite=True)

    def v_AnnAssign(self, node: cst.AnnAssign) -> None:
        self.visit(node.annotation)
        if node.value is not None:
            self.visit(node.value)
            self.store_target(node.target, self.stmt_end, definite=True)
        elif isinstance(node.target, cst.Name):
            self.declare_local(node.target.value)
        else:
            self.visit(node.target)

    def v_AugAssign(self, node: cst.AugAssign) -> None:
        self.visit(node.target)  # read first
        self.visit(node.value)
        if isinstance(node.target, cst.Name):
            self.store(node.target.value, self.stmt_end, definite=True)

    def v_Del(self, node: cst.Del) -> None:
        self._del_target(node.target)

    def _del_target(self, target: cst.CSTNode) -> None:
        if isinstance(target, cst.Name):
            self.read(target.value, target)
            self.declare_local(target.value)
        elif isinstance(target, (cst.Tuple, cst.List)):
            for el in target.elements:
                self._del_target(el.value)
        else:
            self.visit(target)

    def v_Import(self, node: cst.Import) -> None:
        for alias in node.names:
            if alias.asname is not None:
                self.store_target(alias.asname.name, self.stmt_end, definite=True)
            else:
                name = alias.name
                while isinstance(name, cst.Attribute):
                    name = name.value
                self.store(name.value, self.stmt_end, definite=True)  # type: ignore[union-attr]

    def v_ImportFrom(self, node: cst.ImportFrom) -> None:
        if isinstance(node.names, cst.ImportStar):
            return
        for alias in node.names:
            target = alias.asname.name if alias.asname is not None else alias.name
            self.store_target(target, self.stmt_end, definite=True)

    def v_Global(self, node: cst.Global) -> None:
        self.scope.global_decls.update(item.name.value for item in node.names)

    def v_Nonlocal(self, node: cst.Nonlocal) -> None:
        self.scope.nonlocal_decls.update(item.name.value for item in node.names)

    def v_If(self, node: cst.If) -> None:
        self.visit(node.test)
        self.block(node.body)
        self.block(node.orelse)

    def v_While(self, node: cst.While) -> None:
        self.visit(node.test)
        self.block(node.body)
        self.block(node.orelse)

    def v_For(self, node: cst.For) -> None:
        self.visit(node.iter)
        self.block(node.body, [node.target])
        self.block(node.orelse)

    def v_With(self, node: cst.With) -> None:
        for item in node.items:
            self.visit(item.item)
            if item.asname is not None:
                self.store_target(item.asname.name, self.region.end(item.asname), definite=True)
        unit = self.unit_of.get(node) if self.scope is self.module else None
        if unit is not None:
            self.units.append(unit)
            self.assigned.setdefault(unit, set())
        try:
            self.block(node.body)
        finally:
            if unit is not None:
                self.units.pop()

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
            self.store_target(node.name.name, self.region.end(node.name), definite=True)
        self.visit(node.body)

    v_ExceptStarHandler = v_ExceptHandler

    def v_Match(self, node) -> None:
        self.visit(node.subject)
        for case in node.cases:
            self.block(case)

    def v_MatchAs(self, node) -> None:
        if node.pattern is not None:
            self.visit(node.pattern)
        if node.name is not None:
            self.store(node.name.value, self.region.end(node.name), definite=True)

    def v_MatchStar(self, node) -> None:
        if node.name is not None:
            self.store(node.name.value, self.region.end(node.name), definite=True)

    def v_MatchMapping(self, node) -> None:
        for el in node.elements:
            self.visit(el)
        if node.rest is not None:
            self.store(node.rest.value, self.region.end(node.rest), definite=True)

    def v_MatchKeywordElement(self, node) -> None:
        self.visit(node.pattern)

    # definitions
    def _params(self, params: cst.Parameters) -> List[cst.Param]:
        out = list(params.posonly_params) + list(params.params) + list(params.kwonly_params)
        if isinstance(params.star_arg, cst.Param):
            out.append(params.star_arg)
        if params.star_kwarg is not None:
            out.append(params.star_kwarg)
        return out

    def _type_scope(self, type_params, done: Pos) -> Optional[_Scope]:
        """PEP 695 annotation scope holding the type parameters."""
        if not type_params:
            return None
        scope = _Scope(FUNCTION, self.scope, done, tuple(self.blocks))
        for tp in type_params.params:
            scope.stores.setdefault(tp.param.name.value, [])
        saved, self.scope = self.scope, scope
        try:
            for tp in type_params.params:
                for part in ("bound",):
                    value = getattr(tp.param, part, None)
                    if value is not None:
                        self.visit(value)
                if getattr(tp, "default", None) is not None:
                    self.visit(tp.default)
        finally:
            self.scope = saved
        return scope

    def v_FunctionDef(self, node: cst.FunctionDef) -> None:
        done = self.region.end(node)
        for d in node.decorators:
            self.visit(d)
        params = self._params(node.params)
        for p in params:
            if p.default is not None:
                self.visit(p.default)
        outer = self.scope
        tscope = self._type_scope(getattr(node, "type_parameters", None), done)
        self.scope = tscope or outer
        try:
            for p in params:
                if p.annotation is not None:
                    self.visit(p.annotation)
            if node.returns is not None:
                self.visit(node.returns)
            fscope = _Scope(FUNCTION, self.scope, done, tuple(self.blocks))
            for p in params:
                fscope.stores.setdefault(p.name.value, [])
            self.scope = fscope
            self.visit(node.body)
        finally:
            self.scope = outer
        self.store(node.name.value, done, definite=True)

    def v_ClassDef(self, node: cst.ClassDef) -> None:
        done = self.region.end(node)
        for d in node.decorators:
            self.visit(d)
        outer = self.scope
        tscope = self._type_scope(getattr(node, "type_parameters", None), done)
        self.scope = tscope or outer
        try:
            for arg in list(node.bases) + list(node.keywords):
                self.visit(arg)
            self.scope = _Scope(CLASS, self.scope, done)
            self.visit(node.body)
        finally:
            self.scope = outer
        self.store(node.name.value, done, definite=True)

    def v_TypeAlias(self, node) -> None:
        done = self.region.end(node)
        outer = self.scope
        tscope = self._type_scope(node.type_parameters, done)
        self.scope = _Scope(FUNCTION, tscope or outer, done, tuple(self.blocks))  # the value is lazy
        try:
            self.visit(node.value)
        finally:
            self.scope = outer
        self.store(node.name.value, self.stmt_end, definite=True)

    def v_Lambda(self, node: cst.Lambda) -> None:
        params = self._params(node.params)
        for p in params:
            if p.default is not None:
                self.visit(p.default)
        outer = self.scope
        scope = _Scope(FUNCTION, outer, self.region.end(node), tuple(self.blocks))
        for p in params:
            scope.stores.setdefault(p.name.value, [])
        self.scope = scope
        try:
            self.visit(node.body)
        finally:
            self.scope = outer

    # comprehensions
    def _comprehension(self, node, results: Sequence[cst.CSTNode]) -> None:
        comp: cst.CompFor = node.for_in
        self.visit(comp.iter)  # evaluated in the enclosing scope
        outer = self.scope
        self.scope = _Scope(COMPREHENSION, outer)
        try:
            first = True
            while comp is not None:
                if not first:
                    self.visit(comp.iter)
                first = False
                self.store_target(comp.target, self.region.end(comp.target))
                for cond in comp.ifs:
                    self.visit(cond.test)
                comp = comp.inner_for_in
            for r in results:
                self.visit(r)
        finally:
            self.scope = outer

    def v_ListComp(self, node) -> None:
        self._comprehension(node, [node.elt])

    v_SetComp = v_ListComp
    v_GeneratorExp = v_ListComp

    def v_DictComp(self, node) -> None:
        self._comprehension(node, [node.key, node.value])

    def v_NamedExpr(self, node: cst.NamedExpr) -> None:
        self.visit(node.value)
        scope = self.scope
        while scope.kind == COMPREHENSION and scope.parent is not None:
            scope = scope.parent
        saved, self.scope = self.scope, scope
        try:
            self.store_target(node.target, self.region.end(node))
        finally:
            self.scope = saved

