"""``NNSIGHT_IR_DUMP=<folder>``: write the IR text of every compiled trace there, for debugging.

Each call site is written once, when it is first lowered (its IR is the same on
every later run), as ``<file>-<line>.nnir.txt``; a remote request (whose
bindings carry the captured values) is written on every run as
``<file>-<line>.request.<n>.txt``.
"""
import itertools
import os
from typing import Optional

_counter = itertools.count(1)


def folder() -> Optional[str]:
    return os.environ.get("NNSIGHT_IR_DUMP") or None


def _stem(file: str, line: int) -> str:
    base = os.path.basename(file).strip("<>") or "trace"
    return f"{base}-{line}"


def _write(name: str, text: str) -> str:
    target = folder()
    os.makedirs(target, exist_ok=True)
    path = os.path.join(target, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def dump_program(program) -> Optional[str]:
    """Write a call site's program; returns the path (None when dumping is off)."""
    if folder() is None:
        return None
    from compiler.ir import print_program

    root = program.units[0]
    return _write(_stem(root.loc.file, root.header[0]) + ".nnir.txt", print_program(program))


def dump_request(request, program) -> Optional[str]:
    """Write a remote request (program plus captured values)."""
    if folder() is None:
        return None
    from compiler.ir.request import print_request

    root = program.units[0]
    return _write(f"{_stem(root.loc.file, root.header[0])}.request.{next(_counter)}.txt", print_request(request))
