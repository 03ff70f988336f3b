"""The hosted model's memory, and the routes that would alias it past autograd's version counter.

The integrity check (:mod:`runtime.integrity`) sees every in-place write autograd counts: a tensor's
version counter is shared by its views and by ``detach()``. Some routes make a second tensor, array
or storage over the same memory with a counter of its own (or none), and a write through it would go
unseen: ``.data`` (read, or assigned: ``x.data = w``), ``.numpy()`` and ``__array__`` (which numpy
calls from C on any tensor it is given), DLPack, ``untyped_storage()`` and ``storage()``, ``set_``,
``share_memory_`` and ``copy.copy`` (through ``__reduce_ex__``). A request may not take them over
the hosted model's memory: the guard asks :meth:`HostedMemory.check` when user code reads one of
those attributes of a tensor (or of a tensor class: ``torch.Tensor.numpy(w)``), and every server
callable that reaches them from native code -- any numpy callable, wherever it is read from, torch's
DLPack entry points, ``copy.copy`` -- reaches the request wrapped so that its arguments are checked
first (:meth:`HostedMemory.checked`, applied to every attribute value the guard hands out).

Those checks are made where request code reads a callable. The same aliases are refused once more on
the tensor side, where every native route ends (``Tensor.__array__``, ``__dlpack__``,
``untyped_storage()``), by a torch function mode active while request code runs
(:mod:`runtime.loader.tensor_side`): a numpy class reached without an attribute read
(``type(np.float32(1.0))``) or a server function that converts a tensor for the request is refused there.
Numpy callables also refuse an argument that names raw memory (:mod:`runtime.loader.native_protocols`).

Hosted memory is decided by storage, not by tensor object: a view, a slice, a ``.detach()`` or a
``Parameter(w)`` of a weight shares its storage and is refused too; a saved activation or the
request's own tensor is not (``out.numpy()`` keeps working). The set of hosted storages is computed
once per model at its first check and recomputed when a weight's storage moved (a restore).
"""
import functools
import sys
import types
import weakref
from typing import Any, Dict, FrozenSet, Optional, Tuple

from .errors import ServerRefusal
from .native_protocols import carrier

# Attribute names of a tensor that make an alias autograd does not count (``__dlpack__`` and
# ``__reduce_ex__`` are refused on every object already).
ALIAS_ATTRIBUTES = frozenset(("data", "numpy", "__array__", "untyped_storage", "storage", "set_", "share_memory_"))
# Server functions outside numpy that alias a tensor argument: (module, name).
ALIAS_FUNCTIONS = (("torch", "from_dlpack"), ("torch.utils.dlpack", "from_dlpack"),
                   ("torch.utils.dlpack", "to_dlpack"), ("copy", "copy"))
# numpy classes whose instances keep the memory of the array-like they are built from (by name: numpy.ma
# and numpy.char are imported lazily, maybe by the request itself).
ALIAS_CLASSES = frozenset(("nditer", "matrix", "recarray", "poly1d", "MaskedArray", "Arrayterator", "chararray"))
_HOW = {"data": "`.data`", "numpy": "`.numpy()`", "__array__": "`__array__()`",
        "untyped_storage": "`.untyped_storage()`", "storage": "`.storage()`", "set_": "`set_()`",
        "share_memory_": "`.share_memory_()`"}


_FUNCTIONS = frozenset((types.FunctionType, types.BuiltinFunctionType, types.MethodType))
_PASSING_BOUND = 256  # types remembered per request as passing by their type alone
# Types whose values are never a server callable to wrap (the attribute reads of user code, mostly).
_PLAIN = frozenset((int, float, bool, str, bytes, type(None), tuple, list, dict, set, frozenset))


def _numpy(module: Any) -> bool:
    # (exactly str: a request's class may name its module with a str subclass whose == is its own code)
    return type(module) is str and (module == "numpy" or module.startswith("numpy."))


class _Storages:
    """One model's hosted storages (data pointer -> tensor name), with what they were computed from."""

    __slots__ = ("tensors", "data_ptrs", "names")

    def __init__(self, root: Any) -> None:
        named = list(root.named_parameters()) + list(root.named_buffers())
        self.tensors = tuple(t for _, t in named)
        self.data_ptrs = self._data_ptrs()
        self.names: Dict[int, str] = {}
        for name, tensor in named:
            ptr = _storage_ptr(tensor)
            if ptr:
                self.names.setdefault(ptr, name)

    def _data_ptrs(self) -> Tuple[int, ...]:
        import torch

        return tuple(map(torch.Tensor.data_ptr, self.tensors))

    def current(self) -> bool:
        return self._data_ptrs() == self.data_ptrs


# The hosted storages of each model (by its torch module), made at its first check.
_STORAGES: "weakref.WeakKeyDictionary[Any, _Storages]" = weakref.WeakKeyDictionary()


def hosted_storages(root: Any) -> Dict[int, str]:
    """The storages of ``root``'s parameters and buffers: data pointer -> tensor name (kept per model,
    recomputed once a weight's data pointer moved). The sandbox's model process uses the same set."""
    found = _STORAGES.get(root)
    if found is None or not found.current():
        found = _STORAGES[root] = _Storages(root)
    return found.names


def _storage_ptr(tensor: Any) -> int:
    """The address of ``tensor``'s storage (0: none), past a request subclass's ``__torch_function__``
    (which could answer for another storage)."""
    import torch

    try:
        if type(tensor) in (torch.Tensor, torch.nn.Parameter):
            return tensor.untyped_storage().data_ptr()
        with torch._C.DisableTorchFunctionSubclass():
            storage = torch.Tensor.untyped_storage(tensor)
        return 0 if storage.device.type == "meta" else storage.data_ptr()  # (a FakeTensor's: no memory)
    except (RuntimeError, NotImplementedError, TypeError):  # a sparse or storage-less tensor: no alias
        return 0


def _refuse(message: str) -> ServerRefusal:
    from .guard import refuse

    return refuse("NN404", message)


_FIX = ("the hosted model is shared by every request, and a write through such an alias would change it "
        "unseen. Work on a copy (`w.detach().clone()`, then `.numpy()` or numpy functions on that), or use "
        "torch operations, which read the weights without aliasing them")


class HostedMemory:
    """One request's view of the hosted model's memory (see the module docstring)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._names: Optional[Dict[int, str]] = None
        self._wrapped: Dict[int, Tuple[Any, Any]] = {}  # id(server callable) -> (it, its checked version)
        self._entries: Optional[FrozenSet[int]] = None
        # type -> its __module__ then, for types whose instances pass :meth:`checked` by their type alone
        self._passing: Dict[type, str] = {}
        self.side: Any = None  # the request's tensor-side check while it runs (runtime.loader.tensor_side)

    # -- what is hosted ---------------------------------------------------------------------------

    def names(self) -> Dict[int, str]:
        if self._names is None:
            from runtime.integrity import root_module

            root = root_module(self.model) if self.model is not None else None
            self._names = hosted_storages(root) if root is not None else {}
        return self._names

    def hosted(self, obj: Any) -> Optional[str]:
        """The name of the hosted tensor whose memory ``obj`` (a tensor) is, or None."""
        torch = sys.modules.get("torch")
        if torch is None or not isinstance(obj, torch.Tensor):
            return None
        names = self.names()
        ptr = _storage_ptr(obj) if names else 0
        return names.get(ptr) if ptr else None

    # -- the guard's checks -------------------------------------------------------------------------

    def check(self, obj: Any, name: str) -> Any:
        """``obj.<name>`` for a name of :data:`ALIAS_ATTRIBUTES`: raises for hosted memory; returns a
        checked callable for a tensor class's method or ``set_`` (whose argument is the alias), or None."""
        torch = sys.modules.get("torch")
        if torch is None:
            return None
        if isinstance(obj, type):
            if not issubclass(obj, torch.Tensor):
                return None
            if name == "data":
                raise _refuse("the `data` descriptor of tensor class %s is not available to a request (it reads "
                              "`.data` past the check that the tensor is not the hosted model's memory): read "
                              "`x.data` of a tensor, and for a weight work on a copy (`w.detach().clone()`)"
                              % obj.__qualname__)
            return self._checked_function(getattr(obj, name), "`Tensor.%s`" % name)
        if not isinstance(obj, torch.Tensor):
            return None
        found = self.hosted(obj)
        if found is not None:
            raise _refuse("%s of a tensor whose memory is the hosted model's (%r) is not available to a "
                          "request: %s" % (_HOW.get(name, name), found, _FIX))
        if name == "set_":
            return self._checked_function(getattr(obj, name), "`set_()`")
        return None

    def check_store(self, obj: Any) -> None:
        """``x.data = value``: the value is not seen here, and a tensor given the hosted model's memory
        that way would write it past its own version counter; refused for every tensor."""
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(obj, torch.Tensor):
            raise _refuse("assigning `.data` of a tensor is not available to a request: it can make the tensor "
                          "an alias of the hosted model's memory that autograd does not count. Rebind the name "
                          "(`x = value`) or copy into it (`x.copy_(value)`); for a weight, work on "
                          "`w.detach().clone()`")

    def check_args(self, args: tuple, kwargs: Dict[str, Any], what: str) -> None:
        """Refuse a hosted tensor among a call's arguments (or in a list or tuple among them), and an
        object that names raw memory (:func:`.native_protocols.carrier`)."""
        torch = sys.modules.get("torch")
        tensor = torch.Tensor if torch is not None else ()
        for group in (args, kwargs.values()):
            for arg in group:
                if isinstance(arg, tensor):
                    self._refuse_arg(arg, what)
                elif type(arg) in (list, tuple):
                    for item in arg:
                        if isinstance(item, tensor):
                            self._refuse_arg(item, what)
                        elif type(item) not in _PLAIN:
                            _refuse_carrier(item, what)
                elif type(arg) not in _PLAIN:
                    _refuse_carrier(arg, what)

    def _refuse_arg(self, arg: Any, what: str) -> None:
        found = self.hosted(arg)
        if found is not None:
            raise _refuse("%s given a tensor whose memory is the hosted model's (%r) is not available to a "
                          "request: it can return an array or tensor over that memory. %s"
                          % (what, found, _FIX[0].upper() + _FIX[1:]))

    # -- the module views' wrapping -------------------------------------------------------------------

    def entries(self) -> FrozenSet[int]:
        """The ids of the server functions whose calls must be checked (besides numpy's)."""
        if self._entries is None:
            found = set()
            for module, name in ALIAS_FUNCTIONS:  # (never imports: a lazy package would)
                obj = getattr(sys.modules.get(module), "__dict__", {}).get(name)
                if obj is not None:
                    found.add(id(obj))
            self._entries = frozenset(found)
        return self._entries

    def checked(self, value: Any) -> Any:
        """``value`` as a request gets it from an attribute read: a server callable that can alias its
        arguments -- any numpy callable, wherever it was read from (``np.asarray``, ``np.ma.add.f``,
        ``np.r_.makemat``), and :data:`ALIAS_FUNCTIONS` -- checks them first."""
        tp = type(value)
        if tp in _PLAIN:
            return value
        passing = self._passing.get(tp)
        if passing is not None:  # (a tensor, an envoy: at every intervention step)
            module = tp.__module__
            if type(module) is str and module == passing:
                return value
        if isinstance(value, type):
            if value.__name__ not in ALIAS_CLASSES or not _numpy(value.__module__):
                return value  # (a class is wrapped only if it keeps its input's memory: dtypes stay classes)
        elif tp in _FUNCTIONS:
            entries = self._entries if self._entries is not None else self.entries()
            if id(value) not in entries and not _numpy(getattr(value, "__module__", None)):
                return value
        else:
            module = tp.__module__
            if not _numpy(module):  # decided by the type alone while its module stays the same
                if type(module) is str and len(self._passing) < _PASSING_BOUND:
                    self._passing[tp] = module
                return value
            if not callable(value):
                return value
        hit = self._wrapped.get(id(value))
        if hit is not None and hit[0] is value:
            return hit[1]
        name = "`%s.%s`" % (getattr(value, "__module__", None) or tp.__module__,
                            getattr(value, "__name__", tp.__name__))
        if tp in _FUNCTIONS or tp.__name__ == "_ArrayFunctionDispatcher":
            wrapped: Any = self._checked_function(value, name)
        else:  # a class, a ufunc, a callable object (np.ma.add): its attributes stay readable
            wrapped = _CheckedObject(value, self, name)
        self._wrapped[id(value)] = (value, wrapped)
        return wrapped

    def _checked_function(self, function: Any, what: str) -> Any:
        memory = self

        @functools.wraps(function, updated=())  # (not its __dict__: np.ma.add.f is the raw ufunc)
        def checked(*args: Any, **kwargs: Any) -> Any:
            memory.check_args(args, kwargs, what)
            return memory._result(function(*args, **kwargs))

        return checked

    def _result(self, value: Any) -> Any:
        numpy = sys.modules.get("numpy")
        if numpy is not None and type(value) is numpy.ufunc:  # np.frompyfunc's ufunc has .at, which writes
            return _CheckedObject(value, self, "`%s`" % getattr(value, "__name__", "ufunc"))
        return value


def _refuse_carrier(arg: Any, what: str) -> None:
    name = carrier(arg)
    if name is not None:
        from .guard import refuse

        raise refuse("NN402", "%s given an object of type %s that answers %r is not available to a request: "
                              "numpy would build an array over the memory address it names. Give numpy your data "
                              "itself (a list, an array)" % (what, type(arg).__name__, name))


def unwrapped(obj: Any) -> Any:
    """The server object behind a checked one (the guard judges refusals by class on it)."""
    return obj._target if type(obj) is _CheckedObject else obj


class _CheckedObject:
    """A numpy ufunc, class or callable object whose calls (and methods: ``ufunc.at``) refuse hosted
    memory; it still answers ``isinstance`` and can be subclassed."""

    __slots__ = ("_target", "_memory", "_what")

    def __init__(self, target: Any, memory: HostedMemory, what: str) -> None:
        self._target, self._memory, self._what = target, memory, what

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._memory.check_args(args, kwargs, self._what)
        return self._memory._result(self._target(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        wrapped = self._memory.checked(value)
        if wrapped is value and callable(value) and not isinstance(value, type):  # a method: ufunc.at
            return self._memory._checked_function(value, "%s.%s`" % (self._what[:-1], name))
        return wrapped

    @property
    def __class__(self) -> type:  # isinstance(np.add, np.ufunc) still holds (a class stays no type)
        target = self._target
        return _CheckedObject if isinstance(target, type) else type(target)

    def __instancecheck__(self, obj: Any) -> bool:
        return isinstance(obj, self._target)

    def __subclasscheck__(self, cls: Any) -> bool:
        return issubclass(cls, self._target)

    def __mro_entries__(self, bases: tuple) -> tuple:
        return (self._target,)

    def __repr__(self) -> str:
        return repr(self._target)
