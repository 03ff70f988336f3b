"""Read-only views of the server's modules: what a request holds instead of a module.

A request never holds a server module itself. ``import torch``, a
``BIND_MODULE`` binding and ``x.some_module`` all give a :class:`ModuleView`,
whose attribute reads go through the request's guard (the per-module table of
:mod:`compiler.access`: refused entry points, private names, refused
submodules) and whose attributes cannot be assigned or deleted -- the server's
modules are shared by every request.
"""
import types
from typing import Any, List

from .errors import ServerRefusal


_NO_DICT: Any = types.MappingProxyType({})


class ModuleView:
    """A server module as a request sees it (see the module docstring)."""

    __slots__ = ("_view_module", "_view_guard")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        raise TypeError("module views cannot be subclassed")

    def __getattribute__(self, name: str) -> Any:  # every read, also names found on ``object``
        if name == "__class__":  # a view is not a module: isinstance(view, ModuleType) is False
            return ModuleView
        if name == "__dict__":  # and has no namespace to hand out
            return _NO_DICT
        return object.__getattribute__(self, "_view_guard").module_attr(
            object.__getattribute__(self, "_view_module"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise read_only(object.__getattribute__(self, "_view_module"), name)

    def __delattr__(self, name: str) -> None:
        raise read_only(object.__getattribute__(self, "_view_module"), name)

    def __dir__(self) -> List[str]:
        module = object.__getattribute__(self, "_view_module")
        guard = object.__getattribute__(self, "_view_guard")
        return sorted(n for n in module.__dict__ if guard.module_entry_allowed(module, n))

    def __repr__(self) -> str:
        return "<server module %r>" % module_name(object.__getattribute__(self, "_view_module"))

    __doc__ = None


def make_view(module: types.ModuleType, guard: Any) -> ModuleView:
    view = object.__new__(ModuleView)
    object.__setattr__(view, "_view_module", module)
    object.__setattr__(view, "_view_guard", guard)
    return view


def module_of(view: ModuleView) -> types.ModuleType:
    """The module behind a view (server code only)."""
    return object.__getattribute__(view, "_view_module")


def module_name(module: types.ModuleType) -> str:
    name = module.__dict__.get("__name__")  # never getattr: lazy modules import on unknown names
    return name if isinstance(name, str) else "?"


def read_only(module: Any, name: str) -> ServerRefusal:
    what = module_name(module) if isinstance(module, types.ModuleType) else repr(module)
    return ServerRefusal("NN404 cannot assign or delete %s.%s: the server's modules are shared by every request, "
                         "so a request cannot change them" % (what, name), code="NN404")
