"""Guarded builds of request programs, reused when the same program arrives again.

A request's units are parsed, checked and rewritten to their guarded form
(:mod:`runtime.loader.rewrite`), then compiled: ~0.5 ms for a one-line trace,
more for bigger bodies. That build depends only on the program's content (the
rewrite reads nothing but the tree and the static access tables; the code it
makes finds the request's guard through the request's own builtins and
namespace at run time), so a program whose encoded record is byte-identical
to one built before gets that build back. A program that a check refuses
raises and is never stored. Clients send the same program again and again (a
call site in a loop), so most requests hit.

Keyed by the SHA-256 of the program's canonical record; bounded (oldest
dropped first).
"""
import hashlib
from typing import Any, Callable

from compiler.ir import framing
from compiler.ir.upgraders import to_record
from compiler.lru import BoundedLRU

from .. import registries

BOUND = 64
_built: "BoundedLRU[Any]" = BoundedLRU(BOUND)


def program_digest(program: Any) -> bytes:
    """SHA-256 of the program's canonical record (the same program gives the same bytes)."""
    return hashlib.sha256(framing.pack(to_record(program))).digest()


def guarded_build(program: Any, build: Callable[[Any], Any]) -> Any:
    """``build(program)``, or the build of an identical program made before."""
    key = program_digest(program)
    hit = _built.get(key)
    if hit is not None:
        return hit
    built = build(program)  # raises for a refused program: nothing is stored
    _built.put(key, built)
    return built


def clear() -> None:
    _built.clear()


registries.track("runtime.loader.compiled_programs", lambda: len(_built), BOUND)
