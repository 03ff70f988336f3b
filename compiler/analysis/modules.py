"""Find modules on disk without importing them.

``importlib.util.find_spec("a.b")`` imports ``a``; :func:`find_module` walks the
path finders one component at a time instead, so no module code ever runs.
:func:`import_root` and :func:`local_names` describe the directory a file is
imported from (a script's directory is ``sys.path[0]``): modules found there
are the user's own code, captured by value.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
from functools import lru_cache
from typing import FrozenSet, Optional

from importlib.machinery import ModuleSpec

EXTENSION_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def find_module(name: str) -> Optional[ModuleSpec]:
    """The spec of module ``name`` (dotted), found without executing any module code."""
    parts = name.split(".")
    if not all(p.isidentifier() for p in parts):
        return None
    try:
        spec = importlib.util.find_spec(parts[0])  # top level: finders only, no import
    except (ImportError, ValueError):
        return None
    for i in range(1, len(parts)):
        locations = spec.submodule_search_locations if spec is not None else None
        if not locations:
            return None
        try:
            spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]), list(locations))
        except (ImportError, ValueError):
            return None
    return spec


def has_source(spec: ModuleSpec) -> bool:
    """Whether the module is Python source (a namespace package counts)."""
    origin = spec.origin
    if origin is None or origin == "namespace":  # namespace package
        return spec.submodule_search_locations is not None
    return origin.endswith(".py")


def is_extension(path: str) -> bool:
    return path.endswith(EXTENSION_SUFFIXES)


def import_root(path: str) -> str:
    """The directory ``path`` is imported from: the first ancestor that is not a package."""
    d = os.path.dirname(os.path.abspath(path))
    while os.path.isfile(os.path.join(d, "__init__.py")):
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    return d


@lru_cache(maxsize=256)
def local_names(root: str) -> FrozenSet[str]:
    """Top-level module names importable from directory ``root``."""
    names = set()
    try:
        entries = os.listdir(root)
    except OSError:
        return frozenset()
    for entry in entries:
        full = os.path.join(root, entry)
        if os.path.isdir(full):
            if entry.isidentifier() and _is_package_dir(full):
                names.add(entry)
        elif entry.endswith(".py") or is_extension(entry):
            stem = entry.split(".", 1)[0]
            if stem.isidentifier():
                names.add(stem)
    return frozenset(names)


def _is_package_dir(d: str) -> bool:
    try:
        return any(e.endswith(".py") for e in os.listdir(d))
    except OSError:
        return False


def local_module_file(base: str, dotted: str) -> Optional[str]:
    """The file of module ``dotted`` relative to directory ``base`` (source preferred)."""
    parts = dotted.split(".") if dotted else []
    path = os.path.join(base, *parts)
    if parts and os.path.isfile(path + ".py"):
        return path + ".py"
    if os.path.isdir(path):
        init = os.path.join(path, "__init__.py")
        return init if os.path.isfile(init) else path
    if parts:
        head, tail = os.path.split(path)
        try:
            for entry in sorted(os.listdir(head)):
                if entry.startswith(tail + ".") and is_extension(entry):
                    return os.path.join(head, entry)
        except OSError:
            pass
    return None
