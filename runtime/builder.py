"""Build executable code from IR units.

Each unit's source is parsed, line/column numbers are moved back to where
the code stands in the user's file (so tracebacks, ``breakpoint()`` and
``inspect`` point at the user's own lines), and every with-statement that owns
a descendant unit is rewritten from::

    with EXPR as T:
        BODY

into::

    with EXPR as T:
        if not __nnsight_claimed__(K):
            BODY

When ``EXPR`` is a tracing context it claims unit K at ``__enter__`` and runs
that unit as its body at ``__exit__``; any other context manager leaves the
claim empty and the body runs inline as usual.
"""
import ast
import builtins
import dis
import sys
from typing import Callable, Dict, List, Optional, Tuple

from compiler.ir import FACT_INVOKE, CodeUnit, Program
from compiler import pyast

from . import claims, gate

CLAIMED = "__nnsight_claimed__"


class CompiledUnit:
    """A unit's code object, plus which descendant unit each header line starts."""

    __slots__ = ("program", "unit", "code", "headers", "__weakref__")  # weak: runtime.claims

    def __init__(self, program: "CompiledProgram", unit: CodeUnit, code, headers: Dict[int, int]):
        self.program = program
        self.unit = unit
        self.code = code
        self.headers = headers


class CompiledProgram:
    """All units of a program, built; lookups by unit id and by code object."""

    __slots__ = ("program", "units", "free_names", "trivial", "invoke_parents", "memo", "_accesses", "_writeback",
                 "rewrite")

    def __init__(self, program: Program, rewrite: Optional[Callable[[ast.AST, str], ast.AST]] = None):
        """``rewrite(tree, file)``: lowers a unit's tree before it is compiled -- the server's
        guards (:mod:`runtime.loader.rewrite`) for code from a request; None for local traces,
        whose units compile exactly as written."""
        gate.check(program)  # refuse code newer than this Python before building or running any
        self.program = program
        self.rewrite = rewrite
        self._accesses = False  # static envoy accesses, read from the IR on first use (nnsight/tracing/hookplan.py)
        # ids of the units whose body opens `with ....invoke(...)` blocks (the IR's `invoke` unit fact)
        self.invoke_parents = frozenset(u.parent for u in program.units if FACT_INVOKE in u.facts)
        self._writeback: Dict[int, Tuple[str, ...]] = {}
        # facts the tracing layer derives from this program once (kept here, they die with it)
        self.memo: Dict[Tuple[str, int], object] = {}
        self.free_names: Tuple[str, ...] = tuple(b.name for b in program.bindings)
        self.units: List[CompiledUnit] = [None] * len(program.units)  # type: ignore[list-item]
        for unit in program.units:
            self.units[unit.id] = _build_unit(self, program, unit)
        # A root body that does nothing (`pass`, constants) can't be trapped (CPython compiles
        # it to NOPs outside the with-block's exception range); running it inline is harmless.
        self.trivial = does_nothing(self.units[0].code)

    def writeback_names(self, unit_id: int) -> Tuple[str, ...]:
        """Names a unit and its descendants assign: candidates to copy back to the caller."""
        found = self._writeback.get(unit_id)
        if found is None:
            names = []
            for uid in self.descendants(unit_id, include_self=True):
                names.extend(self.program.units[uid].assigned)
            found = self._writeback[unit_id] = tuple(dict.fromkeys(names))
        return found

    def descendants(self, unit_id: int, include_self: bool = False) -> List[int]:
        """Ids of the units nested (at any depth) in ``unit_id``, in pre-order."""
        below = {unit_id}
        out = [unit_id] if include_self else []
        for u in self.program.units:  # parents precede children
            if u.parent in below:
                below.add(u.id)
                out.append(u.id)
        return out


def _descendant_headers(program: Program, unit_id: int) -> Dict[int, int]:
    """Map every header line of every descendant unit to that unit's id."""
    below = {unit_id}
    headers: Dict[int, int] = {}
    for u in program.units:  # parents precede children
        if u.parent in below:
            below.add(u.id)
            first, last = u.header
            for line in range(first, last + 1):
                headers[line] = u.id
    return headers


class _ClaimBodies(ast.NodeTransformer):
    def __init__(self, starts: Dict[int, int]):
        self.starts = starts

    def _visit_with(self, node):
        self.generic_visit(node)
        uid = self.starts.get(node.lineno)
        if uid is None:
            return node
        test = ast.UnaryOp(op=ast.Not(), operand=ast.Call(
            func=ast.Name(id=CLAIMED, ctx=ast.Load()), args=[ast.Constant(value=uid)], keywords=[]))
        guard = ast.If(test=test, body=node.body, orelse=[])
        for n in (guard, test, test.operand, test.operand.func, test.operand.args[0]):
            ast.copy_location(n, node.body[0])
            n.end_lineno, n.end_col_offset = node.body[-1].end_lineno, node.body[-1].end_col_offset
        node.body = [guard]
        return node

    visit_With = _visit_with
    visit_AsyncWith = _visit_with

    def visit_FunctionDef(self, node):  # with-blocks inside nested defs are not units
        return node

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_Lambda = visit_FunctionDef
    visit_ClassDef = visit_FunctionDef


_INERT_OPS = frozenset(dis.opmap[n] for n in (
    "RESUME", "NOP", "LOAD_CONST", "POP_TOP", "RETURN_VALUE", "RETURN_CONST", "CACHE", "EXTENDED_ARG")
    if n in dis.opmap)
_STORE_NAME = dis.opmap["STORE_NAME"]


def does_nothing(code) -> bool:
    """Is ``code`` a body of only ``pass`` and constant expressions (a docstring included)?"""
    if code.co_names not in ((), ("__doc__",)):
        return False
    co = code.co_code
    return all(co[i] in _INERT_OPS or co[i] == _STORE_NAME for i in range(0, len(co), 2))


def _positioned_text(unit: CodeUnit) -> Optional[str]:
    """The unit's source laid out at its place in the user's file, when that is exact.

    Compiling this text directly gives the user's lines and columns without an
    AST walk. Lines inside multi-line strings can't be re-indented, so units
    that may have them (and units on the file's first line) take the AST path.
    """
    text = unit.source
    line_shift, col = unit.loc.line - 1, unit.loc.col
    if not col:
        return "\n" * line_shift + text
    if line_shift < 1 or "\"\"\"" in text or "'''" in text or "\\\n" in text or "\r" in text:
        return None
    pad = " " * col
    body = pad + text.replace("\n", "\n" + pad)
    return "\n" * (line_shift - 1) + "if 1:\n" + body  # `if 1:` compiles to one NOP on the header line


def _build_unit(cprog: CompiledProgram, program: Program, unit: CodeUnit) -> CompiledUnit:
    headers = _descendant_headers(program, unit.id)
    rewrite = cprog.rewrite if cprog is not None else None
    text = None if headers or rewrite is not None else _positioned_text(unit)
    code = _code_from_ast(program, unit, headers, rewrite) if text is None else \
        compile(text, unit.loc.file, "exec", dont_inherit=True)
    compiled = CompiledUnit(cprog, unit, code, headers)
    claims.register(code, compiled)
    return compiled


def _code_from_ast(program: Program, unit: CodeUnit, headers: Dict[int, int], rewrite=None):
    """Parse, move every node to the user's lines and columns, guard descendant bodies, compile."""
    tree = pyast.parse(unit.source, unit.loc.file, "exec")
    line_shift = unit.loc.line - 1
    col_shift = unit.loc.col
    if line_shift or col_shift:
        for node in ast.walk(tree):
            if hasattr(node, "lineno"):
                node.lineno += line_shift
                end = getattr(node, "end_lineno", None)
                if end is not None:
                    node.end_lineno = end + line_shift
                if col_shift and hasattr(node, "col_offset"):
                    node.col_offset += col_shift
                    if getattr(node, "end_col_offset", None) is not None:
                        node.end_col_offset += col_shift
    if rewrite is not None:
        tree = rewrite(tree, unit.loc.file)
    starts = {program.units[uid].header[0]: uid for uid in set(headers.values())}
    if starts:
        tree = _ClaimBodies(starts).visit(tree)
        ast.fix_missing_locations(tree)
    return pyast.compile_tree(tree, unit.loc.file, "exec")


def namespace(free_names, f_locals, f_globals, extra: Optional[dict] = None) -> dict:
    """Globals for running a program's units: its free names, bound from the caller."""
    ns = {"__builtins__": builtins, "__name__": f_globals.get("__name__", "__main__"),
          CLAIMED: claims.claimed}
    for name in free_names:
        if name in f_locals:
            ns[name] = f_locals[name]
        elif name in f_globals:
            ns[name] = f_globals[name]
    if extra:
        ns.update(extra)
    return ns
