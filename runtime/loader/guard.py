"""The run-time half of the loader's capability boundary: one :class:`Guard` per request.

The guarded code built by :mod:`runtime.loader.rewrite` calls the guard's
hooks for every attribute read and write; the guarded builtins
(:mod:`runtime.loader.builtins_table`) call the same checks for ``getattr``,
``setattr``, ``vars``, ``dir``, ... The rules (one table with the checker,
:mod:`compiler.access`):

* names refused on every object never get here (refused when the code is
  built), but a dynamic name (``getattr(x, name)``) is checked the same way;
* ``_private`` names: allowed on the request's own objects -- classes built
  by its code (tracked through ``__build_class__``), their instances (for
  names the instance or a request class defines), its functions and by-value
  modules -- refused on everything of the server's (``torch._C``,
  ``model._module``);
* a value that is a module becomes a read-only :class:`ModuleView`, or is
  refused if the policy refuses it (``torch.os``, ``logging.sys``);
* refused entries of allowed modules (``torch.save``, ``numpy.load``,
  ``ndarray.tofile``) are refused by path, by identity (aliases such as
  ``torch.serialization.save``) and by class (methods of instances);
* writes: a server module, a server class or a server function cannot be
  written; private names only on the request's own objects;
* aliases of the hosted model's memory that autograd's version counter does not
  see (``w.data``, ``w.detach().numpy()``, ``np.asarray(w.detach())``,
  ``w.untyped_storage()``): refused (:mod:`runtime.loader.hosted_memory`).
"""
import sys
import types
import weakref
from typing import Any, Callable, Dict, Iterable, Optional, Set, Tuple

from compiler import access, policy

from . import refusal_table, tensor_side
from .errors import ServerRefusal, refused_entry
from .hosted_memory import ALIAS_ATTRIBUTES, HostedMemory, unwrapped
from .native_protocols import check_class
from .views import ModuleView, make_view, module_name, module_of, read_only

_MODULE = types.ModuleType
_FORMAT_NAMES = frozenset(("format", "format_map"))
_FUNCTIONS = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.BuiltinMethodType,
              types.WrapperDescriptorType, types.MethodWrapperType, types.MethodDescriptorType,
              types.ClassMethodDescriptorType, types.GetSetDescriptorType, types.MemberDescriptorType)

_BOUND = (types.MethodType, types.BuiltinMethodType, types.MethodWrapperType)


def _where() -> str:
    """``file:line`` of the request code that called a hook; ``""`` when no request code did.

    Request code runs with the request's builtins table (it holds the guard's hooks), so the first
    frame that has it is the user's line. A refusal while a binding or a value tree is being decoded
    has no such frame: naming the toolchain's own file there would point the user at the wrong place.
    """
    from .rewrite import ATTR

    frame = sys._getframe(2)
    while frame is not None and ATTR not in frame.f_builtins:
        frame = frame.f_back
    return "%s:%d: " % (frame.f_code.co_filename, frame.f_lineno) if frame is not None else ""


def refuse(code: str, message: str) -> ServerRefusal:
    """A refusal naming the user's file:line and the checker's code."""
    return ServerRefusal("%s%s %s" % (_where(), code, message), code=code)


class Guard:
    """Per-request state of the checks: which objects are the request's own."""

    def __init__(self, builtins_table: Dict[str, Any]):
        self.builtins = builtins_table
        self.classes: "weakref.WeakSet[type]" = weakref.WeakSet()
        self.modules: Dict[str, types.ModuleType] = {}  # the request's by-value modules
        self.views: Dict[str, ModuleView] = {}
        self.paths: Dict[str, Optional[str]] = {}  # dotted path -> refusal reason (cache)
        table = refusal_table.current()  # shared, read-only: resolved once per set of imports
        # id -> (object, path, reason): refused entry points; reason None: a builtin the request's
        # table replaces (the real `open`, `getattr` re-exported by a server module), path = its name
        self.refused_ids: Dict[int, Tuple[Any, str, Optional[str]]] = dict(table.refused_ids)
        self.read_only = table.read_only  # [(server class, why)]: its instances' attributes cannot be written
        self.members = table.members  # method name -> [(class, path, reason, only on server objects)]
        self.methods = table.methods  # method name -> (package, reason)
        self._private_ok: Dict[Tuple[type, str], bool] = {}
        self.hosted: Optional[HostedMemory] = None  # the hosted model's memory (set by the loader)
        self.special_names = table.special_names | _FORMAT_NAMES | ALIAS_ATTRIBUTES
        self.hooks = self._hooks()

    def watch_builtins(self, replaced: Iterable[str]) -> None:
        """Once the request's builtins are filled: the real builtins they replace (the ``replaced``
        names), when a server module hands one out (``torch.builtins.open``, a module's ``from
        builtins import open``), become the request's version."""
        import builtins

        real_builtins = builtins.__dict__
        for name in replaced:
            real = real_builtins.get(name)
            if real is not None and self.builtins.get(name) is not real and callable(real):
                self.refused_ids[id(real)] = (real, name, None)

    # -- whose objects ------------------------------------------------------------------------------

    def track_class(self, cls: Any) -> Any:
        if isinstance(cls, type):
            check_class(cls)  # no native memory protocol under a computed name (a metaclass's)
            tensor_side.check_class(cls)  # a torch function mode pops only what it pushed
            self.classes.add(cls)
        return cls

    def is_own_class(self, cls: Any) -> bool:
        return isinstance(cls, type) and cls in self.classes

    def is_own(self, obj: Any) -> bool:
        """Whether ``obj`` was made by the request's code (its class, function, module or instance)."""
        if isinstance(obj, type):
            return obj in self.classes
        if isinstance(obj, types.FunctionType):
            return obj.__globals__.get("__builtins__") is self.builtins
        if isinstance(obj, _MODULE):
            return self.modules.get(module_name(obj)) is obj
        return any(c in self.classes for c in type(obj).__mro__)

    def private_ok(self, obj: Any, name: str) -> bool:
        """May the request read or write ``obj.<name>`` for a ``_private`` name?"""
        if isinstance(obj, (types.FunctionType, _MODULE)):
            return self.is_own(obj)
        if isinstance(obj, type):
            return self._class_defines(obj, name)
        try:
            d = object.__getattribute__(obj, "__dict__")
        except (AttributeError, TypeError):
            d = None
        own_type = any(c in self.classes for c in type(obj).__mro__)
        if not own_type:
            return False
        if d is not None and name in d:
            return True
        return self._class_defines(type(obj), name)

    def _class_defines(self, cls: type, name: str) -> bool:
        """``name`` is defined by one of the request's classes in ``cls``'s MRO, or by none at all."""
        key = (cls, name)
        ok = self._private_ok.get(key)
        if ok is None:
            ok = True
            for c in cls.__mro__:
                if name in c.__dict__:
                    ok = c in self.classes
                    break
            else:
                ok = any(c in self.classes for c in cls.__mro__)
            self._private_ok[key] = ok
        return ok

    # -- reads ----------------------------------------------------------------------------------------

    def check_name(self, obj: Any, name: Any) -> str:
        """The class of a dynamic attribute name; raises for names refused on ``obj``."""
        if not isinstance(name, str):
            raise TypeError("attribute name must be string, not %r" % type(name).__name__)
        kind = access.attribute_class(name)
        if kind == access.REFUSED:
            raise refuse("NN403", "attribute %r is not available on the server: %s" % (
                name, access.attribute_reason(name)))
        return kind

    def get(self, obj: Any, name: str, *default: Any) -> Any:
        """``getattr`` with every check (dynamic names). A private name of a server object is
        absent to a request: with a default, ``getattr(x, "_hook", None)`` gives the default."""
        kind = self.check_name(obj, name)
        try:
            if kind == access.PRIVATE:
                if default and not self.private_readable(obj, name):
                    return default[0]
                return self.private(obj, name)
            if kind == access.MEDIATED:
                return self.special(obj, name)
            return self.attr(obj, name)
        except AttributeError:
            if default:
                return default[0]
            raise

    def attr(self, obj: Any, name: str) -> Any:
        """``obj.name`` for a public name (the hot path)."""
        if isinstance(obj, _MODULE):
            return self.module_attr(obj, name)
        special = name in self.special_names
        if special:
            checked = self._special_public(obj, name)
            if checked is not None:
                return checked
        value = getattr(obj, name)
        if isinstance(value, _MODULE) or id(value) in self.refused_ids:
            return self.value(value)
        hosted = self.hosted
        if hosted is not None:
            value = hosted.checked(value)
        if special and isinstance(value, _BOUND):
            owner = getattr(value, "__self__", None)
            if owner is not obj and owner is not None and not isinstance(owner, _MODULE):
                # a proxy's __getattr__ handed out another object's method (an envoy's module)
                checked = self._special_public(owner, name)
                if checked is not None:
                    return checked
        return value

    def private_readable(self, obj: Any, name: str) -> bool:
        if isinstance(obj, ModuleView):
            return False
        if isinstance(obj, _MODULE) and not self.is_own(obj):
            return False
        return self.private_ok(obj, name)

    def private(self, obj: Any, name: str) -> Any:
        if isinstance(obj, ModuleView) or (isinstance(obj, _MODULE) and not self.is_own(obj)):
            module = module_of(obj) if isinstance(obj, ModuleView) else obj
            raise refuse("NN402", "private attribute %r of server module %r is not available to a request"
                         % (name, module_name(module)))
        if not self.private_ok(obj, name):
            raise refuse("NN402", "private attribute %r of %s is not available to a request: private names "
                                  "are allowed only on your own classes, their instances and your own modules"
                         % (name, _describe(obj)))
        value = getattr(obj, name)
        if isinstance(value, _MODULE) or id(value) in self.refused_ids:
            return self.value(value)
        return self.hosted.checked(value) if self.hosted is not None else value

    def special(self, obj: Any, name: str) -> Callable:
        """``__getattr__`` & co.: a function that checks the name it is called with."""
        real = getattr(obj, name)
        bound = not isinstance(obj, type)
        target = obj.__self__ if isinstance(obj, super) else obj
        guard = self
        reading = name in ("__getattr__", "__getattribute__")

        def checked(*args: Any) -> Any:
            who, rest = (target, args) if bound else (args[0] if args else None, args[1:])
            if not rest:
                return real(*args)
            if reading:
                kind = guard.check_name(who, rest[0])
                if kind == access.PRIVATE and not guard.private_ok(who, rest[0]):
                    raise refuse("NN402", "private attribute %r of %s is not available to a request" % (
                        rest[0], _describe(who)))
                if kind == access.PUBLIC and rest[0] in guard.special_names:
                    checked = guard._special_public(who, rest[0])  # str.format, ndarray.tofile, ...
                    if checked is not None:
                        return checked
                value = guard.value(real(*args))
                return guard.hosted.checked(value) if guard.hosted is not None else value
            guard.store(who, rest[0])
            return real(*args)

        checked.__name__ = name
        return checked

    def _special_public(self, obj: Any, name: str) -> Any:
        """Refused methods of server classes, and ``str.format``'s field traversal.

        ``super(C, x).name`` is judged as ``x.name`` (the method it finds is one of ``x``'s classes').
        """
        if isinstance(obj, super):
            obj = obj.__self__
        obj = unwrapped(obj)  # a checked numpy class or ufunc is judged as itself
        if name in ALIAS_ATTRIBUTES and self.hosted is not None:
            checked = self.hosted.check(obj, name)
            if checked is not None:
                return checked
        for cls, path, reason, shared in self.members.get(name, ()):
            if isinstance(obj, cls) or (isinstance(obj, type) and issubclass(obj, cls)) or \
                    (shared and _is_envoy(obj) and _is_torch_module_class(cls)):  # an envoy forwards to its layer
                if shared and self.is_own(obj):
                    continue
                raise _entry(path, reason)
        entry = self.methods.get(name)
        if entry is not None:
            cls = obj if isinstance(obj, type) else type(obj)
            if any((getattr(c, "__module__", "") or "").split(".")[0] == entry[0] for c in cls.__mro__):
                raise _entry("%s.%s" % (cls.__qualname__, name), entry[1])
        if name in _FORMAT_NAMES and (isinstance(obj, str) or obj is str):
            return _checked_format(getattr(obj, name), obj is str)
        return None

    def value(self, value: Any) -> Any:
        """A module becomes a view (or is refused); a refused entry point is refused."""
        if isinstance(value, _MODULE):
            return self.module_value(value)
        hit = self.refused_ids.get(id(value))
        if hit is not None and hit[0] is value:
            if hit[2] is None:
                return self.builtins[hit[1]]
            raise _entry(hit[1], hit[2])
        return value

    def module_value(self, module: types.ModuleType) -> Any:
        name = module_name(module)
        if self.modules.get(name) is module:
            return module
        view = self.views.get(name)
        if view is not None and module_of(view) is module:
            return view
        reason = self.path_refusal(name)
        if reason is None and policy.classify_module(name) != policy.SERVER:
            reason = policy.module_reason(name)
        if reason is not None:
            raise _entry(name, reason)
        view = self.views[name] = make_view(module, self)  # (torch.ops.aten is not in sys.modules)
        return view

    def path_refusal(self, path: str) -> Optional[str]:
        if path in self.paths:
            return self.paths[path]
        reason = access.entry_refusal(path)
        if reason is None and any(p.startswith("_") and not access.is_dunder(p) for p in path.split(".")):
            reason = "a private part of a server module"
        self.paths[path] = reason
        return reason

    def module_entry_allowed(self, module: types.ModuleType, name: str) -> bool:
        return access.attribute_class(name) == access.PUBLIC and \
            self.path_refusal(module_name(module) + "." + name) is None

    def module_attr(self, module: types.ModuleType, name: str) -> Any:
        """``module.name`` for a server module: the per-module table, then the value checks."""
        if self.modules.get(module_name(module)) is module:
            return self.value(getattr(module, name))
        kind = access.attribute_class(name)
        mod = module_name(module)
        if kind == access.REFUSED:
            raise refuse("NN402", "attribute %r is not available on the server: %s" % (
                name, access.attribute_reason(name)))
        if kind in (access.PRIVATE, access.MEDIATED):
            raise refuse("NN402", "private attribute %r of server module %r is not available to a request"
                         % (name, mod))
        path = mod + "." + name
        reason = self.path_refusal(path)
        if reason is not None:
            raise _entry(path, reason)
        if mod == "builtins" and name in self.builtins:
            return self.builtins[name]
        try:
            value = getattr(module, name)
        except AttributeError:
            raise AttributeError("module %r has no attribute %r" % (mod, name)) from None
        value = self.value(value)
        return self.hosted.checked(value) if self.hosted is not None else value

    # -- writes ----------------------------------------------------------------------------------------

    def store(self, obj: Any, name: Any) -> Any:
        """Check that ``obj.name`` may be assigned or deleted; returns ``obj``."""
        kind = self.check_name(obj, name)
        if name == "data" and self.hosted is not None:
            self.hosted.check_store(obj)
        if isinstance(obj, ModuleView):
            raise refuse("NN404", read_only(module_of(obj), name).args[0])
        own = self.is_own(obj)
        if isinstance(obj, _MODULE) and not own:
            raise refuse("NN404", read_only(obj, name).args[0])
        if access.is_dunder(name) and not own:
            raise refuse("NN404", "cannot assign %r on %s: only your own objects' special attributes can be "
                                  "changed" % (name, _describe(obj)))
        if isinstance(obj, type) and not own:
            raise refuse("NN404", "cannot assign or delete %s.%s: the server's classes are shared by every "
                                  "request" % (obj.__qualname__, name))
        if isinstance(obj, _FUNCTIONS) and not own:
            raise refuse("NN404", "cannot assign or delete an attribute of the server's function %s"
                         % _describe(obj))
        if not own:
            for cls, reason in self.read_only:
                if isinstance(obj, cls):
                    raise refuse("NN404", "cannot assign or delete %r on %s: %s" % (name, _describe(obj), reason))
            if _is_envoy(obj) and not any(name in c.__dict__ for c in type(obj).__mro__):
                raise refuse("NN404", "cannot assign or delete %r on %s: it writes through to the hosted model, "
                                      "which is shared by every request (set an intervention's .output / .input "
                                      "instead)" % (name, _describe(obj)))
        if kind == access.PRIVATE and not self.private_ok(obj, name):
            raise refuse("NN402", "private attribute %r of %s is not available to a request" % (
                name, _describe(obj)))
        return obj

    # -- the hooks user code calls --------------------------------------------------------------------

    def request_code(self) -> None:
        """Request code starts or resumes here: the request's tensor-side check on
        (:mod:`runtime.loader.tensor_side`), whoever called it -- the model's forward calling a tensor
        subclass's ``__torch_function__`` or an object the request swapped in, a callback."""
        hosted = self.hosted
        side = hosted.side if hosted is not None else None
        if side is not None:
            side.enter()

    def resumed(self, value: Any) -> Any:
        """A generator or coroutine of the request resumed (``value``: what its yield or await gave)."""
        self.request_code()
        return value

    def _hooks(self) -> Dict[str, Any]:
        from .rewrite import ATTR, PRIVATE, REQUEST, RESUMED, SPECIAL, STORE, VALUE

        return {ATTR: self.attr, PRIVATE: self.private, SPECIAL: self.special, STORE: self.store,
                VALUE: self.value, REQUEST: self.request_code, RESUMED: self.resumed}


def _is_envoy(obj: Any) -> bool:
    """An envoy of the hosted model (it forwards attribute reads and writes to its layer)."""
    envoy = sys.modules.get("nnsight.envoy")
    cls = getattr(envoy, "Envoy", None) if envoy is not None else None
    return isinstance(cls, type) and isinstance(obj, cls)


def _is_torch_module_class(cls: type) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and issubclass(torch.nn.Module, cls)


def _entry(path: str, reason: str) -> Exception:
    return refused_entry(path, reason, _where())


def _describe(obj: Any) -> str:
    if isinstance(obj, type):
        return "server class %s.%s" % (obj.__module__, obj.__qualname__)
    if isinstance(obj, _FUNCTIONS):
        return repr(getattr(obj, "__qualname__", obj))
    return "a server object of type %s.%s" % (type(obj).__module__, type(obj).__qualname__)


def _checked_format(method: Callable, unbound: bool) -> Callable:
    """``str.format`` that refuses fields reading non-public attributes (``"{0.__globals__}"``)."""
    import string

    parse = string.Formatter().parse

    def check(text: Any) -> None:
        if not isinstance(text, str):
            return
        for _, field, spec, _ in parse(text):
            if field:
                for part in _field_attributes(field):
                    if access.attribute_class(part) != access.PUBLIC:
                        raise refuse("NN402", "format field %r reads attribute %r: format strings may only "
                                              "read public attributes on the server" % (field, part))
            if spec:
                check(spec)

    def checked(*args: Any, **kwargs: Any) -> Any:
        check(args[0] if unbound and args else (None if unbound else method.__self__))
        return method(*args, **kwargs)

    return checked


def _field_attributes(field: str) -> Set[str]:
    import _string

    _, rest = _string.formatter_field_name_split(field)
    return {key for is_attr, key in rest if is_attr}
