"""Find ``with tracer.local():`` blocks and what they read (the ``local`` fact, ``CodeUnit.reads``).

A local block's body runs on the client in the middle of a remote trace: the
server stops at it, sends the values of the names it reads, and binds what the
client sends back. The server decides from the IR alone, so the frontend marks
the unit (fact ``local``) and lists the names it must send: the names the body
reads that the rest of the program assigns (intervention values). Names the
body reads from the caller's frame are the client's own and never cross.
"""
import ast
import dataclasses
import textwrap
from typing import List, Optional, Set

from ..ir.nodes import FACT_LOCAL, CodeUnit, Program


def _header_with(parent: CodeUnit, unit: CodeUnit) -> Optional[ast.With]:
    """The with-statement of ``unit``'s header, parsed from its lines in the parent's source."""
    lines = parent.source.splitlines()
    first, last = unit.header
    start = parent.loc.line
    header = lines[first - start: last - start + 1]
    if header and unit.loc.line == last:  # `with x: body` on one line: keep the header part
        header[-1] = header[-1][:unit.loc.col - parent.loc.col]
    text = "\n".join(header)
    try:
        tree = ast.parse(textwrap.dedent(text).rstrip() + "\n    pass\n")
    except SyntaxError:
        return None
    node = tree.body[0] if len(tree.body) == 1 else None
    return node if isinstance(node, ast.With) else None


def opens_local(node: ast.With) -> bool:
    """Is the header exactly ``<something>.local()``?"""
    if len(node.items) != 1:
        return False
    call = node.items[0].context_expr
    return (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "local"
            and not call.args and not call.keywords)


def _loaded_names(source: str) -> List[str]:
    names: List[str] = []
    seen: Set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in seen:
            seen.add(node.id)
            names.append(node.id)
    return names


def _subtree(program: Program, uid: int) -> Set[int]:
    ids = {uid}
    for u in program.units:  # pre-order: a parent comes before its children
        if u.parent in ids:
            ids.add(u.id)
    return ids


def mark_local_blocks(program: Program) -> Program:
    """``program`` with its local-block units marked and their reads listed (unchanged if none)."""
    units = list(program.units)
    changed = False
    for unit in program.units[1:]:
        node = _header_with(program.units[unit.parent], unit)
        if node is None or not opens_local(node):
            continue
        inside = _subtree(program, unit.id)
        outside: Set[str] = set()
        for other in program.units:
            if other.id not in inside:
                outside.update(other.assigned)
        reads = tuple(n for n in _loaded_names(unit.source) if n in outside)
        units[unit.id] = dataclasses.replace(unit, facts=tuple(unit.facts) + (FACT_LOCAL,), reads=reads)
        changed = True
    return dataclasses.replace(program, units=tuple(units)) if changed else program


class LocalBlockLayoutError(ValueError):
    """A local block whose body cannot be cut out of the code sent to the server."""


def _ancestors(program: Program, unit: CodeUnit) -> List[CodeUnit]:
    found = []
    parent = unit.parent
    while parent is not None:
        found.append(program.units[parent])
        parent = program.units[parent].parent
    return found


def _blank_body(source: str, owner_line: int, owner_col: int, body: CodeUnit) -> str:
    """``source`` (of a unit starting at user line ``owner_line``) with ``body``'s lines replaced by ``pass``."""
    lines = source.split("\n")
    first = body.loc.line - owner_line
    count = body.source.count("\n")
    if first < 0 or first + count > len(lines):
        raise LocalBlockLayoutError("%s:%d: the local block's body is not inside its enclosing block"
                                    % (body.loc.file, body.loc.line))
    lines[first] = " " * (body.loc.col - owner_col) + "pass"
    for i in range(first + 1, first + count):
        lines[i] = ""
    return "\n".join(lines)


def _used_names(program: Program) -> Set[str]:
    used: Set[str] = set()
    for unit in program.units:
        for node in ast.walk(ast.parse(unit.source)):
            if isinstance(node, ast.Name):
                used.add(node.id)
            elif isinstance(node, (ast.Global, ast.Nonlocal)):
                used.update(node.names)
    return used


def without_local_bodies(program: Program) -> Program:
    """What the server gets of ``program``: each local block's body is cut out (a ``pass``).

    The body runs on the client, so neither its code nor the names only it uses
    (client functions, modules, data) are sent; the unit stays, with its fact,
    ``reads`` and ``assigned``, so the server knows where to stop and what to bind.
    """
    local = [u for u in program.units if FACT_LOCAL in u.facts]
    if not local:
        return program
    units = list(program.units)
    for unit in local:
        if unit.loc.line <= unit.header[1]:
            raise LocalBlockLayoutError(
                "%s:%d: put the body of `with tracer.local():` on its own lines (it runs on the client, "
                "so it is cut out of the code sent to the server)" % (unit.loc.file, unit.header[1]))
        for owner in _ancestors(program, unit):
            current = units[owner.id]
            units[owner.id] = dataclasses.replace(
                current, source=_blank_body(current.source, owner.loc.line, owner.loc.col, unit))
        for uid in _subtree(program, unit.id):
            units[uid] = dataclasses.replace(units[uid], source="pass\n")
    stripped = dataclasses.replace(program, units=tuple(units))
    used = _used_names(stripped)
    return dataclasses.replace(stripped, bindings=tuple(b for b in stripped.bindings if b.name in used),
                               dynamic_names=tuple(n for n in stripped.dynamic_names if n in used))
