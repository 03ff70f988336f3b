"""Decoding: a value tree -> Python objects, as data only.

Only the documented table of types is rebuilt (see :mod:`compiler.ir.values`).
References go to the caller's ``resolve`` hook (:mod:`.refs`); instances are
rebuilt field by field (:mod:`.instances`); tensors and arrays are sized before
they are allocated (:mod:`.arrays`). Depth, node count and sizes are bounded
by :class:`~compiler.ir.limits.DecodeLimits`; every failure is an
:class:`~compiler.ir.errors.IRDecodeError` (:class:`IRLimitError` for limits).
"""
from __future__ import annotations

import math
import struct
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional

from ..errors import IRDecodeError
from ..limits import DecodeLimits, limits_or_default
from . import arrays, instances, mappings
from .common import ATOMS, short_repr
from .refs import check_reference, check_resolved, refuse_references

Resolve = Callable[[Any], Any]
MayBuild = Callable[[type], bool]


def decode_value(tree: Any, *, resolve: Optional[Resolve] = None, may_build: Optional[MayBuild] = None,
                 limits: Optional[DecodeLimits] = None) -> Any:
    """Rebuild the object a value tree describes (shared references and cycles included).

    resolve: turns a reference into an object (default: refuse every reference).
    may_build: may instances of this class be rebuilt from fields? (default: only the fixed
      server types of :mod:`.instances`; pass the by-value classes of the request).
    limits: size and depth bounds (default :data:`~compiler.ir.limits.DEFAULT_LIMITS`).
    """
    dec = _Decoder(resolve or refuse_references, may_build, limits_or_default(limits))
    try:
        return dec.dec(tree)
    except RecursionError:
        instances.neutralize(dec.finalizable)
        raise dec.limits.exceeded("max_depth", "value tree nesting", "too deep for this stack") from None
    except BaseException:
        instances.neutralize(dec.finalizable)
        raise


class _Decoder:
    def __init__(self, resolve: Resolve, may_build: Optional[MayBuild], limits: DecodeLimits):
        self.resolve = resolve
        self.may_build_hook = may_build
        self.limits = limits
        self.memo: Dict[int, Any] = {}
        self.depth = 0
        self.nodes = 0
        self.finalizable: List[Any] = []  # instances of classes with __del__, until decoding succeeds

    def dec(self, t: Any, k: Optional[int] = None) -> Any:
        tt = type(t)
        if tt in ATOMS or tt is int or tt is float:
            if k is not None:
                raise IRDecodeError("value tree: atom %s cannot be shared" % short_repr(t))
            return t
        if tt is not list or not t or type(t[0]) is not str:
            raise IRDecodeError("value tree: expected an atom or a [tag, ...] node, got %s" % short_repr(t))
        handler = _HANDLERS.get(t[0])
        if handler is None:
            raise IRDecodeError("value tree: unknown tag %s" % short_repr(t[0]))
        self.nodes += 1
        if self.nodes > self.limits.max_items:
            raise self.limits.exceeded("max_items", "value tree node count", self.nodes)
        if self.depth >= self.limits.max_depth:
            raise self.limits.exceeded("max_depth", "value tree nesting", "> %d" % self.depth)
        self.depth += 1
        try:
            return handler(self, t, k)
        except (IRDecodeError, RecursionError, MemoryError):
            raise
        except Exception as e:
            raise IRDecodeError("value tree: bad %r node %s: %s: %s" % (
                t[0], short_repr(t), type(e).__name__, e)) from e
        finally:
            self.depth -= 1

    def bind(self, k: Optional[int], obj: Any) -> Any:
        if k is not None:
            if type(k) is not int or k in self.memo:
                raise IRDecodeError("value tree: bad or duplicate shared id %s" % short_repr(k))
            self.memo[k] = obj
        return obj

    def items(self, t: list, start: int = 1) -> list:
        out = []  # plain loops, not comprehensions: one stack frame less per level of nesting
        for x in t[start:]:
            out.append(self.dec(x))
        return out

    def ref(self, t: list) -> Any:
        check_reference(t[1])
        try:
            obj = self.resolve(t[1])
        except IRDecodeError:
            raise
        except Exception as e:  # the hook refused (a policy error, an unknown name...)
            raise IRDecodeError("value tree: %r node names %s, refused: %s: %s" % (
                t[0], short_repr(t[1]), type(e).__name__, e)) from None
        check_resolved(t[1], obj)
        return obj

    def buildable(self, t: list) -> type:
        """The class of an ``object``/``state`` node, if its instances may be rebuilt here."""
        cls = self.ref(t)
        instances.check_buildable(cls, t[0])
        self.check_permitted(cls, t[0])
        return cls

    def check_permitted(self, cls: type, tag: str) -> None:
        if instances.may_build_server_type(cls) or (self.may_build_hook is not None and self.may_build_hook(cls)):
            return
        raise IRDecodeError("value tree: %r node would rebuild an instance of %s, which is neither defined by "
                            "value in this request nor one of the server types the wire may carry" % (
                                tag, _qualname(cls)))

    def instance(self, cls: type, k: Any) -> Any:
        obj = self.bind(k, instances.new_instance(cls))
        if instances.has_finalizer(cls):
            self.finalizable.append(obj)
        return obj

    # -- sharing
    def d_shared(self, t: list, k: Any) -> Any:
        _arity(t, 3)
        if type(t[1]) is not int:
            raise IRDecodeError("value tree: shared id must be an int, got %s" % short_repr(t[1]))
        return self.dec(t[2], t[1])

    def d_ref(self, t: list, k: Any) -> Any:
        _arity(t, 2)
        if type(t[1]) is not int or t[1] not in self.memo:
            raise IRDecodeError("value tree: reference to unknown shared id %s" % short_repr(t[1]))
        return self.memo[t[1]]

    def d_same(self, t: list, k: Any) -> Any:
        _arity(t, 3)
        self.dec(t[1])
        return self.bind(k, self.dec(t[2]))

    # -- scalars and containers
    def d_int(self, t: list, k: Any) -> Any:
        _arity(t, 2)
        if type(t[1]) is not str:
            raise IRDecodeError("value tree: 'int' node needs a hex string")
        return self.bind(k, int(t[1], 16))

    def d_float(self, t: list, k: Any) -> Any:
        _arity(t, 2)
        return self.bind(k, _float_from(t[1]))

    def d_complex(self, t: list, k: Any) -> Any:
        _arity(t, 3)
        return self.bind(k, complex(_num(t[1]), _num(t[2])))

    def d_list(self, t: list, k: Any) -> Any:
        obj = self.bind(k, [])
        for x in t[1:]:
            obj.append(self.dec(x))
        return obj

    def d_dict(self, t: list, k: Any) -> Any:
        obj = self.bind(k, OrderedDict() if t[0] == "odict" else {})
        for pair in t[1:]:
            if type(pair) is not list or len(pair) != 2:
                raise IRDecodeError("value tree: dict entry must be [key, value], got %s" % short_repr(pair))
            key = self.dec(pair[0])
            obj[key] = self.dec(pair[1])
        return obj

    def d_set(self, t: list, k: Any) -> Any:
        obj = self.bind(k, set())
        for x in t[1:]:
            obj.add(self.dec(x))
        return obj

    def d_bytearray(self, t: list, k: Any) -> Any:
        _arity(t, 2)
        if type(t[1]) is not bytes:
            raise IRDecodeError("value tree: expected bytes, got %s" % short_repr(t[1]))
        return self.bind(k, bytearray(t[1]))

    def d_tuple(self, t: list, k: Any) -> Any:
        return self.bind(k, tuple(self.items(t)))

    def d_frozenset(self, t: list, k: Any) -> Any:
        return self.bind(k, frozenset(self.items(t)))

    def d_slice(self, t: list, k: Any) -> Any:
        _arity(t, 4)
        return self.bind(k, slice(*self.items(t)))

    def d_range(self, t: list, k: Any) -> Any:
        _arity(t, 4)
        return self.bind(k, range(*self.items(t)))

    def d_ellipsis(self, t: list, k: Any) -> Any:
        _arity(t, 1)
        return self.bind(k, Ellipsis)

    # -- references and instances
    def d_type(self, t: list, k: Any) -> Any:
        _arity(t, 2)
        cls = self.ref(t)
        if not isinstance(cls, type):
            raise IRDecodeError("value tree: 'type' node names %s, which is not a class" % short_repr(cls))
        return self.bind(k, cls)

    def d_objref(self, t: list, k: Any) -> Any:
        _arity(t, 2)
        return self.bind(k, self.ref(t))

    def d_enum(self, t: list, k: Any) -> Any:
        _arity(t, 3)
        cls = self.ref(t)
        if t[0] == "enum":
            return self.bind(k, instances.enum_member(cls, t[2]))
        return self.bind(k, instances.enum_by_value(cls, self.dec(t[2])))

    def d_namedtuple(self, t: list, k: Any) -> Any:
        if len(t) < 2:
            _arity(t, 2)
        cls = self.ref(t)
        instances.check_namedtuple(cls, len(t) - 2)
        self.check_permitted(cls, t[0])
        return self.bind(k, tuple.__new__(cls, self.items(t, 2)))

    def d_object(self, t: list, k: Any) -> Any:
        _arity(t, 4)
        cls = self.buildable(t)
        obj = self.instance(cls, k)
        instances.set_fields(obj, cls, t[2], t[3], self.dec)
        return obj

    def d_state(self, t: list, k: Any) -> Any:
        _arity(t, 3)
        cls = self.buildable(t)
        obj = self.instance(cls, k)
        attrs, slots = instances.state_fields(self.dec(t[2]))
        if attrs:
            if cls.__dictoffset__ == 0:
                raise IRDecodeError("value tree: class %s has no __dict__ for its state" % cls.__qualname__)
            d = object.__getattribute__(obj, "__dict__")
            for name, value in attrs.items():
                if type(name) is not str:
                    raise IRDecodeError("value tree: state of %s has a non-string key %s" % (
                        cls.__qualname__, short_repr(name)))
                d[name] = value
        if slots:
            instances.set_fields(obj, cls, [], [[n, v] for n, v in slots.items()], _identity)
        return obj

    def d_mapping(self, t: list, k: Any) -> Any:
        _arity(t, 4)
        cls = self.record_class(t[1])
        obj = self.bind(k, mappings.new_record(cls, t[1]))
        only_strings = mappings.string_keys(cls)
        for pair in _entries(t[2], "item"):
            key = self.dec(pair[0])
            mappings.set_item(obj, key, self.dec(pair[1]), only_strings)
        for pair in _entries(t[3], "field"):
            name = mappings.field_name(pair[0])  # checked before its value is decoded
            mappings.set_attr(obj, name, self.dec(pair[1]))
        return obj

    def record_class(self, ref: Any) -> Optional[type]:
        """The class a ``mapping`` node names, or None (rebuild as a MappingRecord) when the hook
        cannot answer; references no hook may answer, and classes that are not mapping records,
        are refused (:mod:`.mappings`)."""
        if type(ref) is not str:
            raise IRDecodeError("value tree: a 'mapping' node names its class as 'module:qualname', got %s" %
                                short_repr(ref))
        check_reference(ref)
        try:
            cls = self.resolve(ref)
        except Exception:  # not available here (not loaded, not sent, no hook): plain data
            return None
        check_resolved(ref, cls)
        return mappings.check_record_class(cls, ref)

    # -- torch and numpy
    def d_tensor(self, t: list, k: Any) -> Any:
        _arity(t, 6)
        return self.bind(k, arrays.tensor_from(t, self.limits))

    def d_dtype(self, t: list, k: Any) -> Any:
        _arity(t, 2)
        return self.bind(k, arrays.torch_dtype(t[1]))

    def d_device(self, t: list, k: Any) -> Any:
        _arity(t, 2)
        if type(t[1]) is not str or len(t[1]) > 64:
            raise IRDecodeError("value tree: a device is a short string, got %s" % short_repr(t[1]))
        import torch

        return self.bind(k, torch.device(t[1]))

    def d_size(self, t: list, k: Any) -> Any:
        import torch

        dims = t[1:]
        if not all(type(d) is int for d in dims):
            raise IRDecodeError("value tree: a size holds ints, got %s" % short_repr(t))
        return self.bind(k, torch.Size(dims))

    def d_ndarray(self, t: list, k: Any) -> Any:
        _arity(t, 4)
        return self.bind(k, arrays.ndarray_from(t[1], t[2], t[3], self.limits))

    def d_npscalar(self, t: list, k: Any) -> Any:
        _arity(t, 3)
        return self.bind(k, arrays.ndarray_from(t[1], [], t[2], self.limits)[()])

    def d_npdtype(self, t: list, k: Any) -> Any:
        _arity(t, 2)
        return self.bind(k, arrays.np_dtype(t[1], self.limits))


def _identity(x: Any) -> Any:
    return x


def _qualname(cls: Any) -> str:
    return "%s.%s" % (getattr(cls, "__module__", "?"), getattr(cls, "__qualname__", short_repr(cls)))


_HANDLERS: Dict[str, Callable[[_Decoder, list, Any], Any]] = {
    "shared": _Decoder.d_shared,
    "ref": _Decoder.d_ref,
    "same": _Decoder.d_same,
    "int": _Decoder.d_int,
    "float": _Decoder.d_float,
    "complex": _Decoder.d_complex,
    "list": _Decoder.d_list,
    "dict": _Decoder.d_dict,
    "odict": _Decoder.d_dict,
    "set": _Decoder.d_set,
    "bytearray": _Decoder.d_bytearray,
    "tuple": _Decoder.d_tuple,
    "frozenset": _Decoder.d_frozenset,
    "slice": _Decoder.d_slice,
    "range": _Decoder.d_range,
    "ellipsis": _Decoder.d_ellipsis,
    "type": _Decoder.d_type,
    "objref": _Decoder.d_objref,
    "enum": _Decoder.d_enum,
    "enumvalue": _Decoder.d_enum,
    "namedtuple": _Decoder.d_namedtuple,
    "object": _Decoder.d_object,
    "state": _Decoder.d_state,
    "mapping": _Decoder.d_mapping,
    "tensor": _Decoder.d_tensor,
    "parameter": _Decoder.d_tensor,
    "dtype": _Decoder.d_dtype,
    "device": _Decoder.d_device,
    "size": _Decoder.d_size,
    "ndarray": _Decoder.d_ndarray,
    "npscalar": _Decoder.d_npscalar,
    "npdtype": _Decoder.d_npdtype,
}


def _arity(t: list, n: int) -> None:
    if len(t) != n:
        raise IRDecodeError("value tree: %r node needs %d items, got %s" % (t[0], n, short_repr(t)))


def _entries(items: Any, what: str) -> list:
    if type(items) is not list:
        raise IRDecodeError("value tree: a 'mapping' node's %ss must be a list, got %s" % (what, short_repr(items)))
    for pair in items:
        if type(pair) is not list or len(pair) != 2:
            raise IRDecodeError("value tree: a 'mapping' %s must be [key, value], got %s" % (what, short_repr(pair)))
    return items


def _num(x: Any) -> float:
    if type(x) is float:
        return x
    if type(x) is list and len(x) == 2 and x[0] == "float":
        return _float_from(x[1])
    raise IRDecodeError("value tree: expected a float, got %s" % short_repr(x))


def _float_from(s: Any) -> float:
    if s == "inf":
        return math.inf
    if s == "-inf":
        return -math.inf
    if s == "nan":
        return math.nan
    if isinstance(s, str) and s.startswith("nan:") and len(s) == 20:
        return struct.unpack(">d", bytes.fromhex(s[4:]))[0]
    raise IRDecodeError("value tree: bad float %s" % short_repr(s))
