"""Objects of a request that would name raw memory to numpy or torch (the native memory protocols).

numpy builds an array over whatever address an object's ``__array_interface__`` names (and reads
``__array_struct__``, the buffer protocol, DLPack; torch reads ``__cuda_array_interface__``), and it reads
those attributes itself, from C: an object that answers one can read and write any memory of the server
process, the hosted weights included. The rewrite refuses defining those names in request code; an
object can still carry one under a name computed at run time. Two checks close the ways we know of:

* :func:`check_class` -- every class the request's code makes (its ``class`` statements, through the
  loader's ``__build_class__``) is refused if a class of its MRO, or of its metaclass's, defines one of
  the protocols, however the key was computed (a metaclass's ``__new__`` adding it to the namespace, a
  ``__prepare__`` mapping that renames keys) -- unless that class is a native (C) class or
  ``torch.Tensor``, whose protocols are the real ones;
* :func:`carrier` -- an argument of a numpy callable (:meth:`HostedMemory.check_args`) that answers one of
  the raw-address protocols and was not made by numpy or torch is refused: an instance whose own
  ``__dict__`` holds the key (``vars(obj)[k] = ...``, ``types.SimpleNamespace(**{k: ...})``, a server
  class that sets attributes from keyword arguments), a ``__getattr__`` that answers any name, a class
  made by calling ``type.__new__`` directly.
"""
import sys
from typing import Any, Optional

from compiler import access

from .errors import ServerRefusal

# The protocols whose value is a raw address (numpy and torch trust it as it is).
RAW_ADDRESS = ("__array_interface__", "__array_struct__", "__cuda_array_interface__")
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class made by Python code, not a native one
_PLAIN = frozenset((int, float, bool, complex, str, bytes, type(None), list, tuple, dict, set, frozenset, slice,
                    range, type(Ellipsis)))
_type_flags = type.__dict__["__flags__"].__get__
_type_dict = type.__dict__["__dict__"].__get__  # (past a metaclass that defines its own __dict__ or __mro__)
_type_mro = type.__dict__["__mro__"].__get__


def _refuse(message: str) -> ServerRefusal:
    from .guard import refuse

    return refuse("NN402", message)


def _real(cls: type) -> bool:
    """A class whose protocols are the server's own: a native class, or torch's ``Tensor``."""
    if not _type_flags(cls) & _HEAPTYPE:
        return True
    torch = sys.modules.get("torch")
    return torch is not None and cls is torch.Tensor


def _defined(cls: type) -> Optional[str]:
    """The first native protocol a class of ``cls``'s MRO defines (its own, not a native class's)."""
    for c in _type_mro(cls):
        names = _type_dict(c)
        for name in access.NATIVE_PROTOCOLS:
            if name in names and not _real(c):
                return name
    return None


def check_class(cls: Any) -> None:
    """Refuse a class the request made whose instances (or which itself, through its metaclass) would
    answer a native memory protocol."""
    if not isinstance(cls, type):
        return
    for owner, what in ((cls, "its instances"), (type(cls), "the class itself")):
        name = _defined(owner)
        if name is not None:
            raise _refuse("class %r defines %r (%s would answer it), which is not available on the server: %s. "
                          "Give numpy an array (`np.asarray(...)` of your data) instead"
                          % (getattr(cls, "__qualname__", "?"), name, what, access.NATIVE_PROTOCOLS[name]))


def carrier(obj: Any) -> Optional[str]:
    """The raw-address protocol ``obj`` answers, unless it is numpy's or torch's own (an ndarray's)."""
    tp = type(obj)
    if tp in _PLAIN:
        return None
    try:
        own = object.__getattribute__(obj, "__dict__")
    except Exception:  # noqa: BLE001 - no instance dict
        own = None
    if type(own) is dict:
        for name in RAW_ADDRESS:
            if name in own:
                return name
    if not _type_flags(tp) & _HEAPTYPE:
        return None  # a native class answers its own protocols (ndarray, numpy scalars, functions)
    mro = _type_mro(tp)
    dynamic = False
    for c in mro:
        names = _type_dict(c)
        if not _real(c):
            for name in RAW_ADDRESS:
                if name in names:
                    return name
            dynamic = dynamic or "__getattr__" in names or "__getattribute__" in names
    if dynamic:  # a __getattr__ of the request's (or of a class it made) may answer any name
        for name in RAW_ADDRESS:
            try:
                getattr(obj, name)
            except Exception:  # noqa: BLE001 - numpy too takes any failure as "not there"
                continue
            return name
    return None
