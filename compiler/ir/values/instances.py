"""Rebuilding instances of classes from value trees without running their code.

The decoder builds ``object``, ``state`` and ``namedtuple`` nodes only for
classes it may build (:func:`may_build_server_type`, or the caller's
``may_build`` hook: the classes a request defined by value, or on the client
the classes its own request sent), and never calls a constructor or hook of
the class:

* instances are made with ``object.__new__(cls)`` (``tuple.__new__`` for named
  tuples), never ``cls.__new__`` / ``__init__``;
* fields go straight into the instance ``__dict__`` and slots through the
  slot's own member descriptor -- never ``__setattr__``, properties or
  ``__setstate__`` (a ``state`` node must hold a ``__dict__`` or a
  ``(__dict__, slots)`` pair, which is what ``__getstate__`` gives by default);
* enum members are looked up in the class's member tables, never made
  (composite flags only through the standard library's own ``Flag`` code);
* a class with a finalizer (``__del__``) is built only when its layout is
  that of a plain class, so that if decoding fails the half-built instance is
  turned into an inert :class:`HalfBuilt` before it is dropped and its
  ``__del__`` never sees it.

What may still run: ``__hash__``/``__eq__`` of a by-value class whose
instances are set members or dict keys in the same tree (on the server those
are the request's own functions, compiled by the loader's guard).
"""
from __future__ import annotations

import enum
import sys
import types
from typing import Any, List

from ..errors import IRDecodeError
from .common import python_class, short_repr, slot_names

# Server classes whose instances a value tree may describe field by field: torch's own nn.Module
# layers (torch.nn.Linear sent as data, a layer saved on the server), and transformers' key/value
# caches (a ``model.output`` holds a ``DynamicCache`` of ``DynamicLayer``s).
SERVER_TYPE_MODULES = ("torch.nn.modules.", "transformers.cache_utils")
# for each module prefix above: the loaded base class(es) its server types must subclass
_SERVER_TYPE_BASES = {
    "torch.nn.modules.": (("torch.nn", "Module"),),
    "transformers.cache_utils": (("transformers.cache_utils", "Cache"),
                                 ("transformers.cache_utils", "CacheLayerMixin")),
}


class HalfBuilt:
    """What an instance of a class with ``__del__`` becomes when its decoding fails."""


def may_build_server_type(cls: type) -> bool:
    """Is ``cls`` one of the fixed server types the wire may rebuild? (only among modules already
    loaded: nothing is imported to answer)"""
    mod = getattr(cls, "__module__", None)
    if not isinstance(mod, str) or not isinstance(cls, type):
        return False
    prefix = next((p for p in SERVER_TYPE_MODULES if mod == p or (p.endswith(".") and mod.startswith(p))), None)
    if prefix is None:
        return False
    if not any(isinstance(base, type) and issubclass(cls, base)
               for base in (_lookup(sys.modules.get(m), q) for m, q in _SERVER_TYPE_BASES[prefix])):
        return False
    module = sys.modules.get(mod)  # the class must really be that module's attribute
    qual = getattr(cls, "__qualname__", "")
    return module is not None and "<" not in qual and _lookup(module, qual) is cls


def _lookup(module: Any, qual: str) -> Any:
    if module is None:
        return None
    obj = module
    for part in qual.split("."):
        obj = getattr(obj, "__dict__", {}).get(part)
        if obj is None:
            return None
    return obj


def check_buildable(cls: Any, tag: str) -> None:
    """Refuse to rebuild anything but a plain Python class (no hidden C state, no odd descriptors)."""
    if not isinstance(cls, type):
        raise IRDecodeError("value tree: %r node names %s, which is not a class" % (tag, short_repr(cls)))
    if not python_class(cls):
        raise IRDecodeError("value tree: %r node names class %s, which is not a plain Python class" % (
            tag, cls.__qualname__))
    for c in cls.__mro__:
        d = c.__dict__.get("__dict__")
        if d is not None and type(d) is not types.GetSetDescriptorType:
            raise IRDecodeError("value tree: class %s overrides __dict__ and cannot be rebuilt" % cls.__qualname__)
    if has_finalizer(cls) and not _inert_layout(cls):
        raise IRDecodeError("value tree: class %s defines __del__ and __slots__; its instances are not "
                            "rebuilt from data (a failed decoding would finalize a half-built object)" %
                            cls.__qualname__)


def has_finalizer(cls: type) -> bool:
    return any("__del__" in c.__dict__ for c in cls.__mro__ if c is not object)


def _inert_layout(cls: type) -> bool:
    return (cls.__basicsize__, cls.__itemsize__, cls.__dictoffset__, cls.__weakrefoffset__) == (
        HalfBuilt.__basicsize__, HalfBuilt.__itemsize__, HalfBuilt.__dictoffset__, HalfBuilt.__weakrefoffset__) \
        and not slot_names(cls)


def neutralize(objs: List[Any]) -> None:
    """Turn half-built instances of finalizer classes into inert ones (decoding failed)."""
    for obj in objs:
        try:
            object.__getattribute__(obj, "__dict__").clear()
            object.__setattr__(obj, "__class__", HalfBuilt)  # never the class's own __setattr__
        except Exception:  # the layout was checked; nothing else to do
            pass


def new_instance(cls: type) -> Any:
    return object.__new__(cls)


def set_fields(obj: Any, cls: type, attrs: List[Any], slots: List[Any], decode: Any) -> None:
    """Fill ``__dict__`` entries and slots directly (no ``__setattr__``, no properties)."""
    if attrs:
        if cls.__dictoffset__ == 0:
            raise IRDecodeError("value tree: class %s has no __dict__ for attributes" % cls.__qualname__)
        d = object.__getattribute__(obj, "__dict__")
        for name, value in _pairs(attrs):
            d[name] = decode(value)
    if slots:
        names = slot_names(cls)
        for name, value in _pairs(slots):
            if name not in names:
                raise IRDecodeError("value tree: %r is not a slot of class %s" % (name, cls.__qualname__))
            _slot_descriptor(cls, name).__set__(obj, decode(value))


def _pairs(items: Any) -> List[Any]:
    if type(items) is not list:
        raise IRDecodeError("value tree: expected a list of [name, value] pairs, got %s" % short_repr(items))
    for pair in items:
        if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str:
            raise IRDecodeError("value tree: expected a [name, value] pair, got %s" % short_repr(pair))
    return items


def _slot_descriptor(cls: type, name: str) -> Any:
    for c in cls.__mro__:
        d = c.__dict__.get(name)
        if d is not None:
            if type(d) is not types.MemberDescriptorType:
                raise IRDecodeError("value tree: slot %r of class %s is shadowed" % (name, cls.__qualname__))
            return d
    raise IRDecodeError("value tree: class %s has no slot %r" % (cls.__qualname__, name))


def state_fields(state: Any) -> Any:
    """Split a ``state`` node's decoded state into (attrs dict, slots dict), or refuse it."""
    if type(state) is dict:
        return state, {}
    if type(state) is tuple and len(state) == 2 and (state[0] is None or type(state[0]) is dict) \
            and type(state[1]) is dict:
        return state[0] or {}, state[1]
    raise IRDecodeError("value tree: 'state' node holds %s; only a __dict__ or a (__dict__, slots) pair is "
                        "rebuilt (a class's own __setstate__ is never called while decoding)" % short_repr(state))


def check_namedtuple(cls: Any, n: int) -> None:
    if not (isinstance(cls, type) and issubclass(cls, tuple) and isinstance(cls.__dict__.get("_fields"), tuple)):
        raise IRDecodeError("value tree: 'namedtuple' node names %s, which is not a named tuple class" %
                            short_repr(cls))
    if not python_class(cls, tuple):
        raise IRDecodeError("value tree: named tuple %s is not a plain Python class" % cls.__qualname__)
    if n != len(cls._fields):
        raise IRDecodeError("value tree: named tuple %s has %d fields, the node has %d items" % (
            cls.__qualname__, len(cls._fields), n))


def enum_member(cls: Any, name: Any) -> Any:
    _check_enum(cls)
    member = cls.__dict__["_member_map_"].get(name) if type(name) is str else None
    if member is None:
        raise IRDecodeError("value tree: enum %s has no member %s" % (cls.__qualname__, short_repr(name)))
    return member


def enum_by_value(cls: Any, value: Any) -> Any:
    _check_enum(cls)
    try:
        member = cls.__dict__["_value2member_map_"].get(value)
    except TypeError:  # unhashable value
        member = None
    if member is not None:
        return member
    for m in cls.__dict__["_member_map_"].values():
        if type(m._value_) is type(value) and type(value) in (int, str, float, bytes, tuple) and m._value_ == value:
            return m
    if issubclass(cls, enum.Flag) and type(value) is int and _stock_flag(cls):
        return cls(value)  # a composite flag: the standard library's own Flag._missing_
    raise IRDecodeError("value tree: enum %s has no member with value %s" % (cls.__qualname__, short_repr(value)))


def _check_enum(cls: Any) -> None:
    if not (isinstance(cls, type) and issubclass(cls, enum.Enum) and type(cls) is enum.EnumMeta):
        raise IRDecodeError("value tree: enum node names %s, which is not a standard enum class" % short_repr(cls))
    if "_member_map_" not in cls.__dict__ or "_value2member_map_" not in cls.__dict__:
        raise IRDecodeError("value tree: enum %s has no member table" % cls.__qualname__)


def _stock_flag(cls: type) -> bool:
    """No class of ``cls`` outside the enum module customizes how members are made."""
    for c in cls.__mro__:
        if c.__module__ in ("enum", "builtins"):
            continue
        for name in ("_missing_", "__new__", "_new_member_", "__new_member__", "__or__", "__and__"):
            value = c.__dict__.get(name)
            if value is None:
                continue
            fn = getattr(value, "__func__", value)
            if isinstance(fn, types.BuiltinFunctionType) or getattr(fn, "__module__", None) == "enum":
                continue
            return False
    return True
