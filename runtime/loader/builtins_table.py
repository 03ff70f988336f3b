"""The builtins a request's code sees: refusals, guarded introspection, and the guard's hooks.

* refused builtins (``eval``, ``open``, ``help``, ``exit``, ... -- the
  policy's table) raise :class:`ServerRefusal` when called;
* ``getattr``, ``setattr``, ``delattr``, ``hasattr``, ``vars``, ``dir`` and
  ``locals`` / ``globals`` apply the guard's checks to the names they are given;
  ``globals()``, ``locals()`` and ``vars()`` return a copy without the
  interpreter's names (``__builtins__`` would hand out the guards' own table);
* ``__import__`` is the loader's importer (server modules come back as
  read-only views), ``__build_class__`` records the classes the request makes
  (its own classes, whose private attributes it may use) and refuses one that
  defines a native memory protocol or a torch mode that could pop the server's
  (:mod:`.native_protocols`, :mod:`.tensor_side`);
* ``__loader__`` and ``__spec__`` (the real import machinery) are absent.
"""
import builtins
import sys
from typing import Any, Callable, Dict

from compiler import access

from .errors import ServerRefusal
from .guard import Guard, refuse


def _refused(name: str, reason: str) -> Callable:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise ServerRefusal("%s() is not available on the server: %s" % (name, reason), code="NN301")

    refused.__name__ = refused.__qualname__ = name
    return refused


def _caller_names(scope: str = "f_locals") -> Dict[str, Any]:
    frame = sys._getframe(2)
    return {k: v for k, v in getattr(frame, scope).items() if not access.reserved_name(k)}


def make_builtins(importer: Callable, guard_factory: Callable[[Dict[str, Any]], Guard]) -> Dict[str, Any]:
    """The builtins table of one request, and its guard (``table["__nnsight_guard__"]`` is not set:
    the guard is returned through ``guard_factory``'s result, kept by the loader)."""
    table = dict(builtins.__dict__)
    for name in ("__loader__", "__spec__"):
        table.pop(name, None)
    guard = guard_factory(table)
    refused = access.refused_builtins()
    for name, reason in refused.items():
        table[name] = _refused(name, reason)
    table["__import__"] = importer
    real_build_class = builtins.__build_class__

    def __build_class__(func: Callable, name: str, *bases: Any, **kwargs: Any) -> Any:
        return guard.track_class(real_build_class(func, name, *bases, **kwargs))

    def getattr(obj: Any, name: Any, *default: Any) -> Any:  # noqa: A001 - the builtin's name
        return guard.get(obj, name, *default)

    def hasattr(obj: Any, name: Any) -> bool:  # noqa: A001
        missing = object()
        return guard.get(obj, name, missing) is not missing  # (a server's private name: False)

    def setattr(obj: Any, name: Any, value: Any) -> None:  # noqa: A001
        builtins.setattr(guard.store(obj, name), name, value)

    def delattr(obj: Any, name: Any) -> None:  # noqa: A001
        builtins.delattr(guard.store(obj, name), name)

    def vars(*args: Any) -> Any:  # noqa: A001
        if not args:
            return _caller_names()
        obj = args[0]
        if not guard.is_own(obj) or isinstance(obj, type(sys)):
            raise refuse("NN402", "vars() of %r is not available on the server: only your own classes and "
                                  "their instances can be inspected" % (type(obj).__name__,))
        return builtins.vars(obj)

    def locals() -> Dict[str, Any]:  # noqa: A001
        return _caller_names()

    def globals() -> Dict[str, Any]:  # noqa: A001
        return _caller_names("f_globals")

    def dir(*args: Any) -> Any:  # noqa: A001
        if not args:
            return sorted(_caller_names())
        obj = args[0]
        names = builtins.dir(obj)
        own = guard.is_own(obj)
        return [n for n in names if access.attribute_class(n) == access.PUBLIC
                or (own and access.attribute_class(n) == access.PRIVATE)]

    replaced = list(refused) + ["__import__", "__loader__", "__spec__"]  # (the last two: absent here)
    for fn in (__build_class__, getattr, hasattr, setattr, delattr, vars, locals, globals, dir):
        fn.__qualname__ = fn.__name__
        table[fn.__name__] = fn
        replaced.append(fn.__name__)
    table.update(guard.hooks)
    guard.watch_builtins(replaced + list(guard.hooks))
    return table
