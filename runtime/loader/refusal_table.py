"""The policy's refused entries resolved against what this process has imported, shared by guards.

:mod:`compiler.access` names refused entry points by path (``torch.save``, ``numpy.load``,
``ndarray.tofile``); a guard needs them as objects (refused by identity, so aliases such as
``torch.serialization.save`` are caught) and as classes (refused methods of instances). Resolving
the table walks a few thousand paths (~0.5 ms): too much for every request, and the answer
changes only when a module is imported. So it is resolved once and reused while ``sys.modules``
holds the same module objects under the same names (:class:`.modules_watch.ModulesWatch`); a new
import resolves it again. The result is read-only once built: a guard copies the one dictionary
it extends per request (:attr:`RefusalTable.refused_ids`).
"""
import sys
import threading
import types
from typing import Any, Dict, List, Optional, Tuple

from compiler import access

from .. import registries
from .modules_watch import ModulesWatch

_MODULE = types.ModuleType


class RefusalTable:
    """The resolved refusals: by identity, by class member, read-only classes and method names."""

    def __init__(self) -> None:
        # id -> (object, path, reason): refused entry points
        self.refused_ids: Dict[int, Tuple[Any, str, Optional[str]]] = {}
        self.members: Dict[str, list] = {}  # method name -> [(class, path, reason, only on server objects)]
        self.read_only: List[Tuple[type, str]] = []  # (server class, why its instances are read-only)
        self.methods: Dict[str, Tuple[str, str]] = {}  # method name -> (package, reason)
        self._resolve()
        self.special_names = frozenset(self.members) | frozenset(self.methods)

    def _resolve(self) -> None:
        tables = [(top, entries, False) for top, entries in access.REFUSED_ENTRIES.items()]
        tables += [(top, entries, True) for top, entries in access.SHARED_ENTRIES.items()]
        for top, entries, shared in tables:
            module = sys.modules.get(top)
            if module is None or top == "builtins":
                continue
            for path, reason in entries.items():
                parent: Any = module
                parts = path.split(".")
                for part in parts[:-1]:
                    parent = peek(parent, part)
                    if parent is None:
                        break
                if parent is None and len(parts) > 1:  # a class of a submodule a lazy package hides
                    parent = loaded_class(top + "." + ".".join(parts[:-1]))
                if parent is None:
                    continue
                full = top + "." + path
                if isinstance(parent, type):
                    self.members.setdefault(parts[-1], []).append((parent, full, reason, shared))
                if shared:
                    continue  # by class only: the request's own subclasses keep the method
                obj = peek(parent, parts[-1])
                # types' classes are refused by path only: type(f) is FunctionType anyway (and useless
                # without a code object, which no request can reach)
                if obj is not None and top != "types" and not isinstance(obj, (_MODULE, str, int, float, bool)):
                    self.refused_ids[id(obj)] = (obj, full, reason)
        for top, entries in access.READ_ONLY_CLASSES.items():
            for path, reason in entries.items():
                cls = loaded_class(top + "." + path)
                if cls is not None:
                    self.read_only.append((cls, reason))
        for package, table in access.REFUSED_METHODS.items():
            for name, reason in table.items():
                self.methods[name] = (package, reason)


class _Cache:
    """The one table in use and the view of ``sys.modules`` it was resolved against (a
    process-wide cache of one entry: it describes the process's imports, never a request)."""

    lock = threading.Lock()
    watch = ModulesWatch()
    table: Optional[RefusalTable] = None


def current() -> RefusalTable:
    """The table for the modules imported now (resolved again after any import)."""
    with _Cache.lock:
        return _up_to_date()


def seal() -> None:
    """Bring the table up to date and trust it at the next call (see :meth:`ModulesWatch.seal`)."""
    with _Cache.lock:
        _up_to_date()
        _Cache.watch.seal()


def _up_to_date() -> RefusalTable:
    changed = _Cache.watch.changed()  # (always asked: it keeps the watch's view current)
    if changed or _Cache.table is None:
        _Cache.table = RefusalTable()
    return _Cache.table


def peek(obj: Any, name: str) -> Any:
    """An attribute without importing anything (modules: their ``__dict__`` only)."""
    if isinstance(obj, _MODULE):
        return obj.__dict__.get(name)
    try:
        return getattr(obj, name, None)
    except Exception:
        return None


def loaded_class(dotted: str) -> Optional[type]:
    """Class ``package.module.Class`` if its module is imported (never imports: lazy packages such as
    transformers keep their classes out of the package's ``__dict__`` until asked)."""
    module_path, _, qual = dotted.rpartition(".")
    while module_path:
        module = sys.modules.get(module_path)
        if module is not None:
            obj: Any = module
            for part in qual.split("."):
                obj = peek(obj, part) if obj is not None else None
            return obj if isinstance(obj, type) else None
        module_path, _, head = module_path.rpartition(".")
        qual = head + "." + qual
    return None


registries.track("runtime.loader.refusal_table", lambda: int(_Cache.table is not None), 1)
