"""What to check: a file, a directory (recursively), or a module name.

A module name is looked up first in the current folder, as ``python -m`` does
(``nnsight-compile check mylib.stats`` from the folder that holds ``mylib``),
then with :func:`compiler.analysis.modules.find_module` on ``sys.path``
(nothing is imported). Server-provided modules are not scanned (the server
has its own copy; a note says so), refused modules get one NN201 error, and
installed third-party packages get one NN202 error and are then scanned like
user code, which is what they would have to be.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import FrozenSet, List, Optional, Tuple

from ..diagnostics import Diagnostic
from . import codes, modules, server

_SKIP_DIRS = frozenset(("__pycache__", "node_modules", "site-packages", "dist-packages"))


class TargetError(Exception):
    """An input that is neither a file, a directory nor a findable module (a usage error)."""


@dataclass
class Target:
    """One command-line input: ``files`` as ``(shown path, real path)`` plus target-level findings."""

    arg: str
    files: List[Tuple[str, str]] = field(default_factory=list)
    diagnostics: List[Diagnostic] = field(default_factory=list)


def resolve(arg: str) -> Target:
    """Turn one input into files to check; raise TargetError if it names nothing."""
    if os.path.isfile(arg):
        return Target(arg, [(arg, os.path.abspath(arg))])
    if os.path.isdir(arg):
        return Target(arg, python_files(arg))
    parts = arg.split(".")
    if not all(p.isidentifier() for p in parts):
        raise TargetError("no such file or directory: %r" % arg)
    return _module_target(arg)


def python_files(directory: str) -> List[Tuple[str, str]]:
    """``*.py`` files under ``directory``, sorted; caches, hidden dirs and virtualenvs skipped."""
    out = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not _skip_dir(os.path.join(dirpath, d)))
        for name in sorted(filenames):
            if name.endswith(".py"):
                shown = os.path.join(dirpath, name)
                out.append((shown, os.path.abspath(shown)))
    return out


def _skip_dir(path: str) -> bool:
    name = os.path.basename(path)
    return name.startswith(".") or name in _SKIP_DIRS or os.path.isfile(os.path.join(path, "pyvenv.cfg"))


def _module_target(name: str) -> Target:
    kind = server.module_kind(name)
    if kind not in (server.SERVER, server.DANGEROUS):
        local = _local_module_target(name)
        if local is not None:
            return local
    spec = modules.find_module(name)
    if spec is None and kind not in (server.SERVER, server.DANGEROUS):
        raise TargetError("no such file, directory or module: %r (module names are looked up in the current "
                          "folder, then on sys.path)" % name)
    origin = spec.origin if spec is not None and spec.origin and os.path.isabs(spec.origin) else None
    shown = origin or name
    target = Target(name)

    def note(code: str, message: str) -> None:
        target.diagnostics.append(Diagnostic(path=shown, line=1, col=0, code=code, message=message,
                                             severity=codes.severity(code), hint=codes.hint(code),
                                             source_line=""))

    if kind == server.SERVER:
        note("NN200", "module '%s' is provided by the server: remote code uses it by name, "
                      "so its source is not checked" % name)
        return target
    if kind == server.DANGEROUS:
        note("NN201", "module '%s' is not available on the server: %s" % (name, server.module_reason(name)))
        return target
    assert spec is not None
    if kind == server.INSTALLED:
        note("NN202", "module '%s' is installed here but not provided by the server" % name)
    if not modules.has_source(spec):
        note("NN203", "module '%s' is compiled code, not Python source: it cannot be captured by value" % name)
        return target
    if spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            target.files.extend(python_files(location))
    elif origin:
        target.files.append((origin, origin))
    return target


def _local_module_target(name: str) -> Optional[Target]:
    """Module ``name`` of the current folder (your own code), or None if the folder has none."""
    cwd = os.getcwd()
    path = modules.local_module_file(cwd, name)
    if path is None:
        return None
    shown = os.path.relpath(path, cwd)
    target = Target(name)
    if modules.is_extension(path):
        code = "NN203"
        target.diagnostics.append(Diagnostic(
            path=shown, line=1, col=0, code=code, severity=codes.severity(code), hint=codes.hint(code),
            message="module '%s' is compiled code, not Python source: it cannot be captured by value" % name,
            source_line=""))
    elif os.path.isdir(path) or os.path.basename(path) == "__init__.py":
        target.files.extend(python_files(os.path.relpath(os.path.dirname(path) if path.endswith(".py") else path,
                                                         cwd)))
    else:
        target.files.append((shown, path))
    return target


def local_names_for(path: str) -> Tuple[str, FrozenSet[str]]:
    """``(import root, local top-level names)`` of a file.

    Next to a script (or in a user's project) every module is the user's own
    code. Inside an installed location (site-packages, the standard library)
    only the file's own top-level package is.
    """
    root = modules.import_root(path)
    if server.location_of_path(path) != "user":
        rel = os.path.relpath(os.path.abspath(path), root)
        top = rel.split(os.sep, 1)[0]
        return root, frozenset((top[:-3] if top.endswith(".py") else top,))
    return root, modules.local_names(root)
