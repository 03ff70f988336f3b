"""The server policy: which modules and builtins remote intervention code may use.

The table lives in one data file, ``compiler/data/server_modules.json``; this
module reads it and answers two questions, for the client's closure pass, the
static checker (:mod:`compiler.analysis`) and the server's loader alike:

* :func:`classify_module` -- ``"server"``, ``"dangerous"``, ``"user"`` or
  ``"installed"`` for a dotted module name (never imports anything).
* :data:`DANGEROUS_BUILTINS` -- builtin name -> why the server refuses it.

Classification, first match wins:

1. a module registered with :func:`register` (``nnsight.register``) or inside a
   registered package: ``"user"`` -- captured by value even when it lives in
   site-packages;
2. the module or one of its parent packages is listed in ``dangerous_modules``
   (``"os"``, ``"torch.hub"``): ``"dangerous"``;
3. its top-level package is in ``server_modules`` or ``stdlib_harmless``:
   ``"server"`` -- referenced by name, the server imports its own copy;
4. any other standard-library module: ``"dangerous"`` (not on the allowlist);
5. found in a site-packages / dist-packages directory: ``"installed"`` -- it
   exists here but the server does not guarantee it;
6. anything else -- the working directory, ``__main__``, modules on a
   ``sys.path`` entry that is not installed, modules that cannot be found:
   ``"user"``, captured by value.

Local execution is never restricted: only remote targets consult this policy.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import site
import sys
import sysconfig
import threading
import types
from typing import Dict, FrozenSet, List, Mapping, Optional, Union

SERVER = "server"
DANGEROUS = "dangerous"
USER = "user"
INSTALLED = "installed"

_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "server_modules.json")


def _load() -> dict:
    with open(_DATA, encoding="utf-8") as f:
        return json.load(f)


_TABLE = _load()

#: Version of the policy table (``version`` in the data file).
VERSION: int = int(_TABLE.get("version", 1))
#: Top-level modules the server guarantees -> what they are for.
SERVER_MODULES: Mapping[str, str] = types.MappingProxyType(dict(_TABLE["server_modules"]))
#: Standard-library modules that are harmless -> what they are for (also guaranteed).
HARMLESS_STDLIB: Mapping[str, str] = types.MappingProxyType(dict(_TABLE["stdlib_harmless"]))
#: Modules (dotted names cover their submodules) the server refuses -> why.
DANGEROUS_MODULES: Mapping[str, str] = types.MappingProxyType(dict(_TABLE["dangerous_modules"]))
#: Builtins the server refuses -> why.
DANGEROUS_BUILTINS: Mapping[str, str] = types.MappingProxyType(dict(_TABLE["dangerous_builtins"]))

_registered: List[str] = []
_lock = threading.Lock()
_location_cache: Dict[str, str] = {}


# -- registration --------------------------------------------------------------------------


def register(module_or_name: Union[str, types.ModuleType]) -> str:
    """Send a module -- and every module of it, if it is a package -- by value.

    For code the automatic rule would treat as installed (it lives in
    site-packages) but that the server does not have. Returns the name.
    Server-provided and dangerous modules cannot be registered.
    """
    name = module_or_name.__name__ if isinstance(module_or_name, types.ModuleType) else module_or_name
    if not isinstance(name, str) or not name or not all(p.isidentifier() for p in name.split(".")):
        raise ValueError("register() takes a module or a dotted module name, got %r" % (module_or_name,))
    kind = _policy_kind(name)
    if kind == SERVER:
        raise ValueError("module %r is provided by the server: it is always used by name, so it cannot be "
                         "registered to be sent by value" % name)
    if kind == DANGEROUS:
        raise ValueError("module %r is not available on the server (%s); registering it would not make "
                         "it safe to run there" % (name, module_reason(name)))
    with _lock:
        if name not in _registered:
            _registered.append(name)
    return name


def unregister(name: str) -> None:
    """Undo :func:`register` (for tests)."""
    with _lock:
        if name in _registered:
            _registered.remove(name)


def registered() -> FrozenSet[str]:
    """Names passed to :func:`register`."""
    return frozenset(_registered)


def is_registered(name: str) -> bool:
    return any(name == r or name.startswith(r + ".") for r in _registered)


# -- classification ------------------------------------------------------------------------


def classify_module(name: str) -> str:
    """``"server"``, ``"dangerous"``, ``"user"`` or ``"installed"`` for a dotted module name."""
    if is_registered(name):
        return USER
    kind = _policy_kind(name)
    if kind is not None:
        return kind
    return _kind_at(_location(name.split(".", 1)[0]))


def _kind_at(where: str) -> str:
    """The kind of an unlisted module by where it lives: ``"stdlib"``, ``"installed"`` or ``"user"``."""
    return {"stdlib": DANGEROUS, "installed": INSTALLED}.get(where, USER)


def module_reason(name: str) -> str:
    """Why the policy classifies ``name`` as it does (one phrase, for diagnostics)."""
    entry = _dangerous_entry(name)
    if entry is not None:
        return DANGEROUS_MODULES[entry]
    top = name.split(".", 1)[0]
    if top in SERVER_MODULES:
        return SERVER_MODULES[top]
    if top in HARMLESS_STDLIB:
        return HARMLESS_STDLIB[top]
    kind = classify_module(name)
    if kind == DANGEROUS:
        return "a standard-library module that is not on the server's allowlist"
    if kind == INSTALLED:
        return "an installed package that the server does not provide"
    return "your own code, captured by value"


def is_dangerous_builtin(name: str) -> bool:
    return name in DANGEROUS_BUILTINS


def _dangerous_entry(name: str) -> Optional[str]:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in DANGEROUS_MODULES:
            return prefix
    return None


def _policy_kind(name: str) -> Optional[str]:
    """The answer of the data file alone (None: decided by where the module lives)."""
    if _dangerous_entry(name) is not None:
        return DANGEROUS
    top = name.split(".", 1)[0]
    if top in SERVER_MODULES or top in HARMLESS_STDLIB:
        return SERVER
    return None


# -- where a module lives --------------------------------------------------------------------


def _norm(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))


def _dirs() -> tuple:
    installed = []
    try:
        installed += site.getsitepackages()
    except Exception:  # virtualenvs of old versions lack it
        pass
    try:
        installed.append(site.getusersitepackages())
    except Exception:
        pass
    paths = sysconfig.get_paths()
    stdlib = [paths.get("stdlib"), paths.get("platstdlib")]
    return (tuple(_norm(p) + os.sep for p in installed if p),
            tuple(_norm(p) + os.sep for p in stdlib if p))


_INSTALLED_DIRS, _STDLIB_DIRS = _dirs()
_STDLIB_NAMES = frozenset(getattr(sys, "stdlib_module_names", ())) | frozenset(sys.builtin_module_names)


@functools.lru_cache(maxsize=4096)
def location_of_path(path: str) -> str:
    """``"installed"``, ``"stdlib"`` or ``"user"`` for a file or directory.

    Memoised (bounded): resolving symlinks costs a system call per path component, and the same
    files (``__main__``'s, every module's) are asked about at every remote request."""
    p = _norm(path)
    parts = p.split(os.sep)
    if "site-packages" in parts or "dist-packages" in parts or p.startswith(_INSTALLED_DIRS):
        return "installed"
    if p.startswith(_STDLIB_DIRS):
        return "stdlib"
    return "user"


def _location(top: str) -> str:
    """Where top-level module ``top`` lives: ``"stdlib"``, ``"installed"`` or ``"user"``."""
    if top in _STDLIB_NAMES:
        return "stdlib"
    if top == "__main__":
        return "user"
    cached = _location_cache.get(top)
    if cached is not None:
        return cached
    paths = _module_paths(top)
    if paths is None:
        return "user"  # not found (yet): not installed here, so not on the server either
    where = "user"
    for p in paths:
        where = location_of_path(p)
        if where != "user":
            break
    _location_cache[top] = where
    return where


def _module_paths(top: str) -> Optional[List[str]]:
    module = sys.modules.get(top)
    d = getattr(module, "__dict__", {}) if module is not None else {}
    spec = d.get("__spec__")
    if module is not None and spec is None:
        f = d.get("__file__")
        return [f] if f else []
    if spec is None:
        try:
            spec = importlib.util.find_spec(top)  # a top-level name: imports nothing
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
    if spec.origin and spec.origin not in ("built-in", "frozen") and os.path.isabs(spec.origin):
        return [spec.origin]
    if spec.origin in ("built-in", "frozen"):
        return [sysconfig.get_paths()["stdlib"]]
    return list(spec.submodule_search_locations or [])


def module_location(module: types.ModuleType) -> str:
    """``"installed"``, ``"stdlib"`` or ``"user"`` for an imported module object."""
    d = getattr(module, "__dict__", {})  # not getattr: lazy modules import on unknown attributes
    name = d.get("__name__", "")
    if name in _STDLIB_NAMES:
        return "stdlib"
    f = d.get("__file__")
    if f:
        return location_of_path(f)
    path = d.get("__path__")
    if path:
        for p in path:
            return location_of_path(p)
    return "user"


def classify_module_object(module: types.ModuleType) -> str:
    """:func:`classify_module` for an imported module, judged by the file it came from.

    Differs from the name-based answer only for modules whose name does not say
    where they live (``__main__`` run from site-packages, e.g. ``python -m pytest``).
    """
    name = getattr(module, "__dict__", {}).get("__name__", "") or ""
    kind = classify_module(name)
    if kind == USER and not is_registered(name):
        return _kind_at(module_location(module))
    return kind
