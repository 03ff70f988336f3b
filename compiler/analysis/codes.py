"""The diagnostic code table of the remotability checker.

Codes are stable: a code never changes meaning once released (new findings
get new codes). ``NN1xx`` are about the file itself, ``NN2xx`` imports,
``NN3xx`` builtins, ``NN4xx`` attribute access. docs/remotable-python.md
explains each one and how to fix it.
"""
from __future__ import annotations

from typing import Dict, NamedTuple

from .. import unresolved as _unresolved


class Code(NamedTuple):
    severity: str  # "error", "warning" or "note"
    title: str  # one line: what the code means
    hint: str  # the default fix hint


CODES: Dict[str, Code] = {
    "NN100": Code("error", "file cannot be read", "save the file as UTF-8 (or declare its encoding)"),
    "NN101": Code("error", "file does not parse", "fix the syntax error"),
    "NN102": Code(
        "error", "syntax newer than the target Python",
        "rewrite it with older syntax, or check against a newer --target-python"),
    "NN200": Code("note", "module is provided by the server", ""),
    "NN201": Code(
        "error", "module not available on the server (dangerous)",
        "remove the import: do file, process and network work locally, outside the trace, and "
        "use the results in it as values (they are captured by value)"),
    "NN202": Code(
        "error", "installed third-party module not provided by the server",
        "the server only provides its guaranteed modules: use one of them instead (or ask the "
        "server's operators to add this one); if it is pure-Python code, such as your own library "
        "installed with pip, `nnsight.register(package)` sends its source by value with the request"),
    "NN203": Code(
        "error", "module has no Python source (cannot be captured by value)",
        "compiled extension modules cannot be sent; rewrite the code in Python or use a "
        "server-provided module"),
    _unresolved.CODE: Code("error", _unresolved.TITLE, _unresolved.HINT),
    "NN301": Code(
        "error", "dangerous builtin",
        "the server refuses builtins that run arbitrary code, touch files or stop the server; "
        "compute the value outside the trace and pass it in"),
    "NN302": Code(
        "warning", "builtin is interactive: works locally, not remotely",
        "remove it before running remotely (there is no terminal on the server)"),
    "NN303": Code(
        "warning", "namespace introspection",
        "on the server, code runs in a namespace rebuilt from its captured bindings: globals(), "
        "locals() and vars() do not show your module, and writes to them are not written back; "
        "use the names directly"),
    "NN401": Code(
        "error", "attribute reaches a module or entry point not available on the server",
        "do not reach a refused module or entry point (torch.hub, torch.save, numpy.load, ...) "
        "through an allowed module; remove the access, and do file work outside the trace"),
    "NN402": Code(
        "error", "attribute that reaches interpreter internals",
        "the server blocks interpreter internals (dunder attributes other than a documented safe "
        "few, function globals, code objects, frames, the subclass list, private attributes of "
        "its own objects); remove the access"),
    "NN403": Code(
        "error", "getattr with a dunder or introspection name",
        "access the attribute directly; the server checks the names given to getattr, setattr, "
        "delattr and hasattr as it checks attributes written in code"),
    "NN404": Code(
        "error", "assignment to the server's modules, classes or functions",
        "the server's modules are shared by every request and read-only to it: keep the value in a "
        "variable of your own instead"),
    "NN503": Code(
        "error", "object cannot be referenced by name on the server",
        "use a function or class importable from its module under its own name"),
}


def severity(code: str) -> str:
    return CODES[code].severity


def hint(code: str) -> str:
    return CODES[code].hint


def table_markdown() -> str:
    """The table as Markdown rows (used to keep the docs in sync)."""
    rows = ["| code | severity | meaning |", "|---|---|---|"]
    rows += ["| %s | %s | %s |" % (c, v.severity, v.title) for c, v in sorted(CODES.items())]
    return "\n".join(rows)
