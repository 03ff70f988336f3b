"""Syntax trees are built one thread at a time: a server verifies one request while its worker
builds another's code, and CPython's converter between C trees and ``ast`` objects keeps
interpreter-wide state (unguarded, the server soak hit ``SystemError: AST constructor recursion
depth mismatch``)."""
import pathlib
import re
import threading

from compiler import pyast

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_a_second_thread_waits_while_a_tree_is_being_built():
    done = threading.Event()

    def other() -> None:
        pyast.parse("x = 1\n")
        done.set()

    with pyast._LOCK:  # as if this thread were converting a tree right now
        thread = threading.Thread(target=other)
        thread.start()
        assert not done.wait(0.3)  # blocked: it may not convert at the same time
    assert done.wait(10)
    thread.join()


def test_server_side_code_builds_trees_only_through_the_lock():
    """The request path (IR verification and upgrades, the builder, the loader, source tracing)
    never calls ``ast.parse`` or compiles an ``ast`` tree directly."""
    direct = re.compile(r"\bast\.parse\(|PyCF_ONLY_AST")
    offenders = []
    for folder in ("runtime", "compiler/ir"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if direct.search(line) and not line.lstrip().startswith("#"):
                    offenders.append("%s:%d: %s" % (path.relative_to(ROOT), n, line.strip()))
    assert offenders == []
