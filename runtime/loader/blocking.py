"""Hide the user's own modules, so that a remote='local' run fails where a real server would."""
import contextlib
import importlib.machinery
import sys
import threading
import types
from typing import Any, Dict, FrozenSet, Iterator, Optional, Tuple

from compiler import policy

from .. import registries
from . import refusal_table
from .errors import ServerImportError
from .modules_watch import ModulesWatch


def is_user_module(name: str, module: Any) -> bool:
    """Would a server lack this imported module? (user code from files; registered packages)."""
    if module is None or not isinstance(module, types.ModuleType):
        return False
    if policy.is_registered(name):
        return True
    if policy._policy_kind(name) is not None:
        return False
    if name in ("__main__", "__mp_main__"):
        return policy.classify_module_object(module) == policy.USER
    d = module.__dict__  # never getattr: lazy modules import things on unknown attributes
    if d.get("__file__") is None and not d.get("__path__"):
        return False  # made at run time (e.g. by an extension module), not user code from a file
    return policy.classify_module(name) == policy.USER and policy.module_location(module) == "user"


class _UserModuleBlocker:
    """A meta-path finder that refuses to import user modules."""

    def __init__(self, allow: Dict[str, types.ModuleType]):
        self.allow = allow

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname in self.allow or policy._policy_kind(fullname) is not None:
            return None
        if policy.is_registered(fullname):
            raise _blocked(fullname)
        try:
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        except Exception:
            return None
        if spec is None:
            return None
        places = [spec.origin] if spec.origin and spec.origin not in ("built-in", "frozen") else []
        places += list(spec.submodule_search_locations or [])
        if places and all(policy.location_of_path(p) == "user" for p in places):
            raise _blocked(fullname)
        return None


def _blocked(name: str) -> ServerImportError:
    return ServerImportError(
        "No module named %r on the server: remote='local' hides your own modules, as a remote server "
        "does not have them. Code and data reach the server only by value -- if this import comes from "
        "a captured function, the module is not captured (register it with nnsight.register(%r), or "
        "import what you need at module level)." % (name, name.split(".")[0]), name=name)


# name -> (module object, registrations then, is_user_module's answer). Whether an imported
# module is user code depends only on the module (its name and file) and the registrations, so
# each is classified once instead of at every remote='local' trace (~1,500 modules, ~20 ms).
# Bounded: cleared when it outgrows sys.modules (modules removed since are forgotten).
_USER_MODULE_MEMO: Dict[str, Tuple[Any, FrozenSet[str], bool]] = {}


class _Snapshot:
    """The last answer of :func:`_user_module_names`: ``(registrations, names)``, and the view of
    ``sys.modules`` it was computed from; one thread at a time recomputes it."""

    lock = threading.Lock()
    watch = ModulesWatch()
    last: Tuple[FrozenSet[str], Tuple[str, ...]] = (frozenset(), ())


def seal_snapshot() -> None:
    """Bring the caches that describe ``sys.modules`` up to date and trust them at the next call.

    Called by a process just before it forks (the sandbox's warm template): in the child,
    comparing every entry of ``sys.modules`` would write to every module object's reference
    count, copying thousands of pages it shares with its parent.
    """
    with _Snapshot.lock:
        _up_to_date()
        _Snapshot.watch.seal()
    refusal_table.seal()


def _user_module_names() -> Tuple[str, ...]:
    """Names in ``sys.modules`` of the user modules to hide.

    While ``sys.modules`` holds the same module objects under the same names as last time
    (:class:`.modules_watch.ModulesWatch`) and the registrations are the same, the answer is the
    same (each module's answer is memoised on exactly those facts), except for ``__main__``,
    whose contents decide: it is asked each time. Otherwise each name is looked up in the memo.
    """
    with _Snapshot.lock:
        names = _up_to_date()
    extra = tuple(n for n in _CONTENT_DECIDES if is_user_module(n, sys.modules.get(n)))
    return names + extra if extra else names


def _up_to_date() -> Tuple[str, ...]:
    registrations = policy.registered()
    changed = _Snapshot.watch.changed()  # (always asked: it keeps the watch's view current)
    last_registrations, names = _Snapshot.last
    if changed or last_registrations != registrations:
        memo = _USER_MODULE_MEMO
        if len(memo) > 2 * len(sys.modules) + 256:
            memo.clear()
        found = []
        for name, module in list(sys.modules.items()):
            if name in _CONTENT_DECIDES:
                continue
            hit = memo.get(name)
            if hit is not None and hit[0] is module and hit[1] == registrations:
                user = hit[2]
            else:
                user = is_user_module(name, module)
                memo[name] = (module, registrations, user)
            if user:
                found.append(name)
        names = tuple(found)
        _Snapshot.last = (registrations, names)
    return names


_CONTENT_DECIDES = ("__main__", "__mp_main__")  # user code or not by their contents: asked each time


@contextlib.contextmanager
def block_user_modules(allow: Optional[Dict[str, types.ModuleType]] = None) -> Iterator[Dict[str, Any]]:
    """Hide user modules from ``sys.modules`` and refuse to import them, for the ``with`` body.

    ``allow`` maps module names to modules that stay importable (the
    program's by-value modules). Yields the hidden modules; they are restored
    on exit, whatever happened inside.
    """
    hidden: Dict[str, Any] = {}
    for name in _user_module_names():
        module = sys.modules.pop(name, None)
        if module is not None:
            hidden[name] = module
    blocker = _UserModuleBlocker(allow if allow is not None else {})
    sys.meta_path.insert(0, blocker)
    try:
        yield hidden
    finally:
        try:
            sys.meta_path.remove(blocker)
        except ValueError:
            pass
        for name, module in hidden.items():
            sys.modules[name] = module


registries.track("runtime.loader.user_module_memo", lambda: len(_USER_MODULE_MEMO), None)  # <= 2 x sys.modules + 256
