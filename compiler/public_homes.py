"""How the server names an object whose own module it does not provide: through its public module.

Many standard-library functions live in a C accelerator module:
``functools.reduce.__module__ == "_functools"``, ``operator.add`` is
``_operator.add``, ``heapq.heappush`` is ``_heapq.heappush``,
``hashlib.sha256`` is ``_hashlib.openssl_sha256``. ``random.random`` is a
method of a hidden ``random.Random`` instance, with no module at all. The
server's allowlist names the public modules (``functools``, ``random``), not
the accelerators, so such an object is referred to as an attribute of a public
module that exposes *this very object* (an identity check:
``getattr(public_module, name) is obj``); the server resolves that reference
to the same object.

Which public modules are tried comes from the object itself, never from a
search of everything loaded, so a refused function re-exported by an allowed
module (``os.path.join`` imported somewhere in ``torch``) is not laundered:

* the object's own module (``__module__``), and for a bound method the module
  of its instance's class (``random.Random`` for ``random.random``);
* the public name of each such module: the name without its leading
  underscores (``_functools`` -> ``functools``), or an entry of
  :data:`PUBLIC_HOMES` where the names differ (``_sre`` -> ``re``);
* only modules the policy calls ``"server"``.

Used by the closure pass (:mod:`compiler.closure.capture`) and by the static
checker (:mod:`compiler.analysis.checker`), so both give the same answer.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any, Iterable, List, Optional

from . import policy

#: Private module -> public modules that re-export its objects, where dropping the
#: leading underscores does not give the public name.
PUBLIC_HOMES = {
    "builtins": ("types",),  # types.FunctionType is builtins.function, which builtins does not name
    "_sre": ("re",),
    "_hashlib": ("hashlib", "hmac"),
    "_blake2": ("hashlib",),
    "_md5": ("hashlib",),
    "_sha1": ("hashlib",),
    "_sha2": ("hashlib",),
    "_sha256": ("hashlib",),
    "_sha512": ("hashlib",),
    "_sha3": ("hashlib",),
    "_collections_abc": ("collections.abc",),
    "_weakrefset": ("weakref",),
    "_pydecimal": ("decimal",),
    "_pydatetime": ("datetime",),
    "_json": ("json", "json.decoder", "json.encoder", "json.scanner"),
}

_MISSING = object()


def server_ref(obj: Any, names: Iterable[Optional[str]] = ()) -> Optional[str]:
    """``"module:name"`` of a server module that holds ``obj`` itself, or None.

    ``names`` are the names the user knows the object by (the name it is bound
    to); they are tried first, then the object's ``__name__`` and
    ``__qualname__``, then every public attribute of the candidate module (an
    alias such as ``from hashlib import sha256 as h``).
    """
    tried = [n for n in names if isinstance(n, str) and n]
    for attr in ("__name__", "__qualname__"):
        n = _attr(obj, attr)
        if isinstance(n, str) and n and "<" not in n:
            tried.append(n)
    for home in candidate_homes(obj):
        module = _loaded(home)
        if module is None:
            continue
        for n in tried:
            if _lookup(module, n) is obj and _allowed(home, n):
                return "%s:%s" % (home, n)
        for n in sorted(k for k in getattr(module, "__dict__", {}) if isinstance(k, str) and not k.startswith("_")):
            if module.__dict__[n] is obj and _allowed(home, n):
                return "%s:%s" % (home, n)
    return None


def candidate_homes(obj: Any) -> List[str]:
    """Server modules that may hold ``obj`` (see the module docstring), most likely first."""
    owners: List[str] = []
    own = _attr(obj, "__module__")
    if isinstance(own, str) and own:
        owners.append(own)
    self_ = _attr(obj, "__self__")
    if isinstance(self_, types.ModuleType):
        owners.append(self_.__dict__.get("__name__", ""))
    elif self_ is not None and not isinstance(self_, type):
        owners.append(getattr(type(self_), "__module__", "") or "")
    out: List[str] = []
    for owner in owners:
        for home in [owner] + public_names(owner):
            if home and home not in out and policy.classify_module(home) == policy.SERVER:
                out.append(home)
    return out


def public_names(module: str) -> List[str]:
    """The public modules that re-export the objects of module ``module`` (``_heapq`` -> ``heapq``)."""
    if module in PUBLIC_HOMES:
        return list(PUBLIC_HOMES[module])
    head, _, last = module.rpartition(".")
    public = last.lstrip("_")
    if public == last or not public:
        return []
    return [(head + "." if head else "") + public]


def _attr(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name, None)
    except Exception:  # a hostile or lazy __getattr__
        return None


def _loaded(name: str) -> Optional[types.ModuleType]:
    """Module ``name`` if imported; harmless standard-library modules are imported on demand."""
    module = sys.modules.get(name)
    if module is None and name.split(".", 1)[0] in policy.HARMLESS_STDLIB:
        try:
            module = importlib.import_module(name)
        except ImportError:
            return None
    return module if isinstance(module, types.ModuleType) else None


def _lookup(module: types.ModuleType, dotted: str) -> Any:
    obj: Any = module
    for part in dotted.split("."):
        d = getattr(obj, "__dict__", None)
        obj = d.get(part, _MISSING) if isinstance(d, dict) or isinstance(d, types.MappingProxyType) else _MISSING
        if obj is _MISSING:
            return _MISSING
    return obj


def _allowed(home: str, name: str) -> bool:
    return policy.classify_module(home + "." + name) != policy.DANGEROUS


def stdlib_server_module(name: str) -> Optional[types.ModuleType]:
    """Standard-library module ``name`` if the server provides it (imported on demand), else None.

    The objects of these modules are the same in every process of one Python
    version, so judging them here tells what the server will do, whatever this
    process happens to have imported.
    """
    top = name.split(".", 1)[0]
    stdlib = top in policy.HARMLESS_STDLIB or top in getattr(sys, "stdlib_module_names", ())
    if not stdlib or policy.classify_module(name) != policy.SERVER:
        return None
    module = sys.modules.get(name)
    if module is None:
        try:
            module = importlib.import_module(name)
        except ImportError:
            return None
    return module if isinstance(module, types.ModuleType) else None


def refusal(obj: Any, name: str) -> Optional[tuple]:
    """``(code, message)`` if the server cannot refer to ``obj``, a function or class that a
    server module exposes as ``name``; None if it can (or if ``obj`` is data, sent by value).

    The static checker's answer for ``from functools import RLock``: the same
    rule the closure pass applies when it meets the object (own module first,
    then :func:`server_ref`), so both report the same code.
    """
    if isinstance(obj, types.ModuleType) or not (isinstance(obj, type) or _function_like(obj)):
        return None
    bname = _attr(obj, "__name__")
    if isinstance(bname, str) and getattr(sys.modules["builtins"], bname, _MISSING) is obj:
        return None  # a builtin: dangerous ones are the checker's NN301
    own = _attr(obj, "__module__")
    own = own if isinstance(own, str) else ""
    kind = policy.classify_module(own) if own else policy.USER
    qual = _attr(obj, "__qualname__")
    if kind == policy.SERVER and isinstance(qual, str):
        module = sys.modules.get(own)
        if module is not None and _lookup(module, qual) is obj:
            return _refused_ref(name, "%s:%s" % (own, qual))
    ref = server_ref(obj, (name,))
    if ref is not None:
        return _refused_ref(name, ref)
    self_ = _attr(obj, "__self__")
    if self_ is not None and not isinstance(self_, (type, types.ModuleType)):
        shown = "a method bound to a %s object" % type(self_).__name__
    else:
        shown = "%s.%s" % (own, qual) if own and isinstance(qual, str) else "a %s" % type(obj).__name__
    if kind == policy.DANGEROUS:
        return "NN201", "'%s' is %s, and module '%s' is not available on the server: %s" % (
            name, shown, own, policy.module_reason(own))
    if kind == policy.INSTALLED:
        return "NN202", "'%s' is %s, and module '%s' is installed here but not provided by the server" % (
            name, shown, own)
    return "NN503", "'%s' (%s) cannot be referenced by name on the server" % (name, shown)


def _refused_ref(name: str, ref: str) -> Optional[tuple]:
    """NN401 if the access table refuses the reference the server would get (``from contextlib
    import MethodType`` sends ``types:MethodType``; ``from logging.handlers import FileHandler``
    sends ``logging:FileHandler``), as the closure pass and the loader refuse it."""
    from . import access

    module = ref.split(":", 1)[0]
    if module == "builtins" or policy.classify_module(module) != policy.SERVER:
        return None
    dotted = ref.replace(":", ".")
    reason = access.entry_refusal(dotted)
    if reason is None:
        return None
    shown = "" if dotted.rpartition(".")[2] == name else " (%s)" % dotted
    return "NN401", "'%s'%s is not available on the server: %s" % (name if shown else dotted, shown, reason)


def _function_like(obj: Any) -> bool:
    return isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, types.MethodType,
                            types.BuiltinMethodType, types.MethodWrapperType, types.WrapperDescriptorType,
                            types.MethodDescriptorType, types.ClassMethodDescriptorType))


def public_equivalent(module: str, names: Iterable[str]) -> Optional[str]:
    """The server module that holds every object of ``from module import names``, or None.

    ``from _operator import add`` at module level binds the very object that
    ``operator.add`` is, and a value goes to the server by its public name, so
    such an import is fine where it runs only locally (module level). Only
    standard-library modules are judged (imported on demand: their objects
    are the same in every process of one Python version).
    """
    top = module.split(".", 1)[0]
    if top not in getattr(sys, "stdlib_module_names", ()) or not public_names(module):
        return None
    try:
        mod = sys.modules.get(module) or importlib.import_module(module)
    except ImportError:
        return None
    homes = set()
    for name in names:
        obj = mod.__dict__.get(name, _MISSING)
        ref = server_ref(obj, (name,)) if obj is not _MISSING and not isinstance(obj, types.ModuleType) else None
        if ref is None:
            return None
        homes.add(ref.split(":", 1)[0])
    return sorted(homes)[0] if homes else None
