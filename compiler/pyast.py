"""``ast.parse`` and ``compile`` of syntax trees, one thread at a time.

CPython (3.11 at least) keeps the converter between its C syntax trees and
``ast`` objects in interpreter-wide state, so two threads converting trees at
once can fail with ``SystemError: AST constructor recursion depth mismatch``.
A server admits one request (verifying its code) while its worker builds
another's, so every tree the runtime makes or compiles goes through this lock.
Compiling source text directly needs no lock (it never builds ``ast`` objects).
"""
import ast
import threading
from typing import Any

_LOCK = threading.Lock()


def parse(source: str, filename: str = "<unknown>", mode: str = "exec") -> Any:
    """``ast.parse(source, filename, mode)`` under the lock."""
    with _LOCK:
        return ast.parse(source, filename=filename, mode=mode)


def compile_tree(tree: Any, filename: str, mode: str = "exec") -> Any:
    """``compile(tree, filename, mode, dont_inherit=True)`` of an ``ast`` tree, under the lock."""
    with _LOCK:
        return compile(tree, filename, mode, dont_inherit=True)
