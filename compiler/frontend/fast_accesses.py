"""Fast path of :func:`compiler.frontend.accesses.scan_accesses` on Python's ``ast``.

Visits the tree in source order exactly like the libcst scanner (chains are
reported in order of appearance), and reports the same dynamic roots,
including ``True``/``False``/``None`` and the names libcst keeps as Name
nodes (``except ... as e``, match captures, keyword-pattern attributes).
Declines (None) on what it does not mirror exactly: unparsable source, a
one-element unparenthesized subscript tuple (``a[0,]``), class keywords,
string subscripts that are not a single plain literal, starred subscripts,
type parameters / ``type`` statements / template strings.
"""
from __future__ import annotations

import ast
import io
import tokenize
from typing import List, Optional, Sequence, Set

from ..fallbacks import FALLBACKS, reason_of
from .accesses import NEEDS_ALL_ATTRIBUTES, NEEDS_ALL_KEYWORDS, AccessReport
from .fast_names import Decline, visit_children

TERMINALS = frozenset(("output", "input", "inputs", "skip", "source", "next", "grad"))  # = accesses.TERMINALS
ROOT_ATTRIBUTES = frozenset(
    (
        "trace", "generate", "session", "scan", "edit", "invoke", "iter", "all", "stop",
        "tokenizer", "config", "dispatch", "dispatched", "device", "dtype", "interleave",
        "pipe", "pipeline", "task",
    )
)  # = accesses.ROOT_ATTRIBUTES

_CHAIN = (ast.Attribute, ast.Subscript, ast.Call)
_DECLINE = tuple(
    t for t in (getattr(ast, n, None) for n in ("TypeAlias", "TemplateStr", "Interpolation")) if t is not None
)


def scan_accesses(sources):
    """:func:`compiler.frontend.accesses.scan_accesses`, on ``ast`` when provably identical."""
    from .fastpath import enabled

    if enabled():
        texts = [sources] if isinstance(sources, str) else (
            list(sources) if isinstance(sources, (list, tuple)) else None)
        if texts is not None and all(isinstance(t, str) for t in texts):
            report = try_scan(texts)
            if report is not None:
                return report
    from .accesses import scan_accesses as scan_libcst

    return scan_libcst(sources)


def try_scan(texts: Sequence[str]):
    """The AccessReport of unit sources, or None when the fast path declines."""
    try:
        scanner = _Scanner()
        for text in texts:
            if "\x0c" in text or text.startswith("\ufeff"):
                FALLBACKS.note("frontend.accesses", "form feed / BOM")
                return None
            scanner.lines = text.splitlines(True)
            scanner.visit(ast.parse(text))
    except Exception as exc:  # Decline, SyntaxError, or a bug here: the libcst path decides
        FALLBACKS.note("frontend.accesses", reason_of(exc))
        return None
    return AccessReport(tuple(scanner.chains), frozenset(scanner.dynamic), scanner.needs_all)


def scan_statements(body: Sequence[ast.stmt], lines: Sequence[str]):
    """The AccessReport of a with-body given as already parsed statements (positions in ``lines``).

    Equal to :func:`try_scan` of the body's cut-out source (the root unit): the
    scanner visits the same nodes in the same order. None where it declines.
    """
    try:
        scanner = _Scanner()
        scanner.lines = lines
        scanner.visit_all(body)
    except Exception as exc:  # the caller scans the unit's text instead
        FALLBACKS.note("frontend.accesses", reason_of(exc))
        return None
    return AccessReport(tuple(scanner.chains), frozenset(scanner.dynamic), scanner.needs_all)


_HANDLERS: dict = {}  # node type -> _Scanner.v_<type> or None (generic: visit the children)


def _pos(node):
    return node.lineno, node.col_offset


class _Scanner:
    def __init__(self) -> None:
        self.chains: List[tuple] = []
        self.seen: Set[tuple] = set()
        self.dynamic: Set[str] = set()
        self.needs_all = False
        self.lines: List[str] = []

    def visit(self, node) -> None:
        kind = type(node)
        try:
            handler = _HANDLERS[kind]
        except KeyError:
            handler = _HANDLERS[kind] = getattr(_Scanner, "v_" + kind.__name__, None)
        if handler is not None:
            handler(self, node)
        else:
            visit_children(node, self.visit)

    def visit_all(self, nodes) -> None:
        for n in nodes:
            if n is not None:
                self.visit(n)

    def v_Name(self, node) -> None:
        self.dynamic.add(node.id)

    def v_Constant(self, node) -> None:
        if node.value is None or node.value is True or node.value is False:
            self.dynamic.add(str(node.value))  # Name nodes in libcst

    v_MatchSingleton = v_Constant

    def v_Attribute(self, node) -> None:
        self._chain(node)

    v_Subscript = v_Attribute
    v_Call = v_Attribute

    def v_keyword(self, node) -> None:
        if node.arg in NEEDS_ALL_KEYWORDS:
            self.needs_all = True
        self.visit(node.value)

    def v_arguments(self, args) -> None:
        positional = list(args.posonlyargs) + list(args.args)
        defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
        for a, d in zip(positional, defaults):
            self.visit_all((a.annotation, d))
        if args.vararg is not None:
            self.visit_all((args.vararg.annotation,))
        for a, d in zip(args.kwonlyargs, args.kw_defaults):
            self.visit_all((a.annotation, d))
        if args.kwarg is not None:
            self.visit_all((args.kwarg.annotation,))

    def v_FunctionDef(self, node) -> None:
        if getattr(node, "type_params", None):
            raise Decline("type parameters")
        self.visit_all(node.decorator_list)
        self.visit(node.args)
        self.visit_all((node.returns,))
        self.visit_all(node.body)

    v_AsyncFunctionDef = v_FunctionDef

    def v_Lambda(self, node) -> None:
        self.visit(node.args)
        self.visit(node.body)

    def v_ClassDef(self, node) -> None:
        if getattr(node, "type_params", None) or node.keywords:
            raise Decline("class keywords / type parameters")
        self.visit_all(node.decorator_list)
        self.visit_all(node.bases)
        self.visit_all(node.body)

    def v_Import(self, node) -> None:
        pass

    v_ImportFrom = v_Import
    v_Global = v_Import
    v_Nonlocal = v_Import

    def v_ExceptHandler(self, node) -> None:
        self.visit_all((node.type,))
        if node.name is not None:
            self.dynamic.add(node.name)
        self.visit_all(node.body)

    def v_Dict(self, node) -> None:
        for k, v in zip(node.keys, node.values):
            self.visit_all((k, v))

    def v_IfExp(self, node) -> None:
        self.visit_all((node.body, node.test, node.orelse))

    def v_MatchAs(self, node) -> None:
        self.visit_all((node.pattern,))
        if node.name is not None:
            self.dynamic.add(node.name)

    def v_MatchStar(self, node) -> None:
        if node.name is not None:
            self.dynamic.add(node.name)

    def v_MatchMapping(self, node) -> None:
        for k, p in zip(node.keys, node.patterns):
            self.visit_all((k, p))
        if node.rest is not None:
            self.dynamic.add(node.rest)

    def v_MatchClass(self, node) -> None:
        self.visit(node.cls)
        self.visit_all(node.patterns)
        for attr, p in zip(node.kwd_attrs, node.kwd_patterns):
            self.dynamic.add(attr)
            self.visit(p)

    def v_TypeAlias(self, node) -> None:
        raise Decline("type alias")

    v_TemplateStr = v_TypeAlias

    def _args(self, call: ast.Call) -> None:
        args = list(call.args) + list(call.keywords)
        args.sort(key=_pos)
        self.visit_all(args)

    def _chain(self, node) -> None:
        steps = []
        base = node
        while isinstance(base, _CHAIN):
            steps.append(base)
            base = base.func if isinstance(base, ast.Call) else base.value
        steps.reverse()
        for step in steps:
            if isinstance(step, ast.Attribute):
                if step.attr in NEEDS_ALL_ATTRIBUTES:
                    self.needs_all = True
            elif isinstance(step, ast.Subscript):
                s = step.slice
                if isinstance(s, ast.Starred) or (isinstance(s, ast.Tuple) and (
                        len(s.elts) == 1 or any(isinstance(e, ast.Starred) for e in s.elts))):
                    raise Decline("a[x,] / a[*x]")
                self.visit(s)
            elif isinstance(step, ast.Call):
                self._args(step)
        if not isinstance(base, ast.Name):
            self.visit(base)
            return
        root = base.id
        first = steps[0]
        if isinstance(first, ast.Attribute) and first.attr in ROOT_ATTRIBUTES:
            return
        path: List[str] = []
        for step in steps:
            if isinstance(step, ast.Attribute):
                if step.attr in TERMINALS:
                    chain = (root, tuple(path), step.attr)
                    if chain not in self.seen:
                        self.seen.add(chain)
                        self.chains.append(chain)
                    return
                path.append(step.attr)
            elif isinstance(step, ast.Subscript):
                index = self._constant_index(step)
                if index is None:
                    break
                path.append(index)
            else:
                break
        self.dynamic.add(root)

    def _constant_index(self, sub: ast.Subscript) -> Optional[str]:
        value = sub.slice
        if isinstance(value, (ast.Tuple, ast.Slice)):
            return None
        sign = ""
        if isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.USub):
            sign, value = "-", value.operand
        if not isinstance(value, ast.Constant):
            return None
        v = value.value
        if type(v) is int:
            return sign + str(v)
        if isinstance(v, str) and not sign:
            if not self._single_string(value):
                raise Decline("implicitly concatenated string subscript")
            return v
        return None

    def _single_string(self, node) -> bool:
        if node.end_lineno != node.lineno:
            return False
        line = self.lines[node.lineno - 1].encode("utf-8")
        seg = line[node.col_offset:node.end_col_offset].decode("utf-8")
        toks = [t for t in tokenize.generate_tokens(io.StringIO(seg).readline)
                if t.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER)]
        return len(toks) == 1 and toks[0].type == tokenize.STRING

