"""Value trees: captured Python data as plain, pickle-free trees.

A tree is built only from atoms -- ``None``, ``bool``, ``str``, ``bytes``,
finite ``float`` and ``int`` in the int64 range -- and *nodes*, lists whose
first item is a tag string. Both msgpack and the text form carry trees
exactly. Tags::

    ["int", "-0x1f..."]                 int outside the int64 range (hex)
    ["float", "nan" | "inf" | "-inf" | "nan:<16 hex bits>"]
    ["complex", re, im]
    ["list", *items]   ["tuple", *items]   ["set", *items]   ["frozenset", *items]
    ["dict", [key, value], ...]         ["odict", [key, value], ...]
    ["bytearray", data]   ["slice", start, stop, step]   ["range", start, stop, step]
    ["ellipsis"]
    ["type", ref]                       a class, by reference
    ["objref", ref]                     any other object the ``objref`` hook names
                                        (functions, modules, ...); decoded by ``resolve``
    ["enum", ref, name]   ["enumvalue", ref, value]
    ["namedtuple", ref, *items]
    ["object", ref, [[attr, value], ...], [[slot, value], ...]]
    ["state", ref, state]               class with __setstate__
    ["tensor", dtype, shape, data, requires_grad, device]   (also "parameter")
    ["dtype", name]   ["device", name]   ["size", *dims]
    ["ndarray", descr, shape, data]   ["npscalar", descr, data]   ["npdtype", descr]
    ["shared", k, node]                 first occurrence of an object used again
    ["ref", k]                          a later occurrence of shared object k
    ["same", node, ["ref", k]]          decode node, then yield object k
                                        (a tuple reached again through a cycle)

``ref`` is whatever the ``classref`` hook returns (plain data; by default
``"module:qualname"``) and is handed back untouched to the ``resolve`` hook.
The optional ``objref`` hook is asked first about every object that is not an
atom or an exact builtin container; a non-None answer is emitted as an
``["objref", ref]`` node (also resolved by ``resolve``), so callers can send
functions, modules or handles by name. Without it such objects are rejected.
Sets are sorted when their items allow it, so trees are deterministic.
"""
from __future__ import annotations

import enum
import importlib
import math
import struct
import sys
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional

from .errors import IRDecodeError, UnencodableValueError

ClassRef = Callable[[type], Any]
ObjRef = Callable[[Any], Any]  # returns a plain-data reference, or None to encode the object normally
Resolve = Callable[[Any], type]

_INT64_MIN = -(2 ** 63)
_INT64_MAX = 2 ** 63 - 1
_CANONICAL_NAN = "7ff8000000000000"
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: the class was defined in Python
_ATOMS = (type(None), bool, str, bytes)
_SUPPORTED = (
    "None, bool, int, float, complex, str, bytes, bytearray, list, tuple, dict, set, "
    "frozenset, slice, range, Ellipsis, enum members, classes, dataclasses and plain "
    "class instances, torch tensors/dtypes/devices/sizes, numpy arrays/scalars/dtypes"
)


# -- helpers shared with the printer, binary encoding and verifier ---------------------


def short_repr(obj: Any, limit: int = 60) -> str:
    """A one-line repr of ``obj``, truncated; never raises."""
    try:
        r = repr(obj)
    except Exception:
        r = "<%s object>" % type(obj).__name__
    r = " ".join(r.split())
    return r if len(r) <= limit else r[: limit - 3] + "..."


def plain_problem(value: Any, path: str = "value") -> Optional[str]:
    """Why ``value`` is not plain data (atoms, lists, dicts), or None if it is."""
    t = type(value)
    if t in _ATOMS or t is int or t is float:
        return None
    if t is list:
        for i, item in enumerate(value):
            p = plain_problem(item, "%s[%d]" % (path, i))
            if p:
                return p
        return None
    if t is dict:
        for k, v in value.items():
            p = plain_problem(k, path + " key") or plain_problem(v, "%s[%s]" % (path, short_repr(k, 20)))
            if p:
                return p
        return None
    return "%s is a %s (%s); only None, bool, int, float, str, bytes, list and dict are plain data" % (
        path, _typename(value), short_repr(value, 40))


def _typename(obj: Any) -> str:
    t = type(obj)
    mod = getattr(t, "__module__", "")
    return t.__qualname__ if mod in ("builtins", "") else "%s.%s" % (mod, t.__qualname__)


def default_classref(cls: type) -> str:
    """Reference a class as ``"module:qualname"`` (it must be importable by that name)."""
    mod = getattr(cls, "__module__", None)
    qual = getattr(cls, "__qualname__", None)
    if not isinstance(mod, str) or not isinstance(qual, str):
        raise ValueError("class has no __module__/__qualname__")
    if "<locals>" in qual:
        raise ValueError("class %s is defined inside a function and cannot be imported by name" % qual)
    module = sys.modules.get(mod)
    if module is not None and lookup_qualname(module, qual) is not cls:
        raise ValueError("%s:%s does not name this class" % (mod, qual))
    return "%s:%s" % (mod, qual)


def default_resolve(ref: Any) -> type:
    """Import the class named by a ``"module:qualname"`` reference."""
    if not isinstance(ref, str) or ":" not in ref:
        raise IRDecodeError("cannot resolve class reference %s: expected 'module:qualname'" % short_repr(ref))
    mod, qual = ref.split(":", 1)
    try:
        cls = lookup_qualname(importlib.import_module(mod), qual)
    except Exception as e:
        raise IRDecodeError("cannot resolve class reference %r: %s" % (ref, e)) from e
    if cls is None:
        raise IRDecodeError("cannot resolve class reference %r: no such attribute" % ref)
    return cls


def lookup_qualname(module: Any, qualname: str) -> Any:
    """``module.<qualname>`` (dotted), or None where an attribute is missing."""
    obj = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


# -- encoding ----------------------------------------------------------------------------


class _Slot:
    """Placeholder for a memoized object's node; becomes ["shared", k, node] if referenced."""

    __slots__ = ("node", "refs", "k")

    def __init__(self) -> None:
        self.node: Any = None
        self.refs = 0
        self.k = -1


class _Ref:
    __slots__ = ("slot",)

    def __init__(self, slot: _Slot):
        self.slot = slot


class _Reject(Exception):
    """Internal: the current object cannot be encoded (reason in args[0])."""


def encode_value(obj: Any, *, where: str = "", classref: Optional[ClassRef] = None,
                 objref: Optional[ObjRef] = None) -> Any:
    """Encode ``obj`` as a value tree; raise UnencodableValueError naming what failed and ``where``."""
    enc = _Encoder(where, classref or default_classref, objref)
    try:
        raw = enc.enc(obj)
    except RecursionError:
        raise UnencodableValueError(
            "cannot encode %s: value is nested too deeply%s" % (short_repr(obj), _in(where))) from None
    return _finalize(raw, [0])


def _in(where: str) -> str:
    return " (%s)" % where if where else ""


def _finalize(x: Any, counter: List[int]) -> Any:
    """Replace slots/refs by shared/ref nodes, numbering shared objects in tree order."""
    t = type(x)
    if t is _Slot:
        if x.refs:
            x.k = counter[0]
            counter[0] += 1
            return ["shared", x.k, _finalize(x.node, counter)]
        return _finalize(x.node, counter)
    if t is _Ref:
        return ["ref", x.slot.k]
    if t is list:
        return [_finalize(item, counter) for item in x]
    return x


class _Encoder:
    def __init__(self, where: str, classref: ClassRef, objref: Optional[ObjRef] = None):
        self.where = where
        self.classref = classref
        self.objref = objref
        self.memo: Dict[int, _Slot] = {}
        self.keep: List[Any] = []  # keeps memoized objects alive so ids stay unique
        self.busy: set = set()  # ids of immutable containers being encoded
        self.path: List[str] = []

    # entry point for every sub-value
    def enc(self, obj: Any) -> Any:
        t = type(obj)
        if t in _ATOMS:
            return obj
        if t is int:
            return obj if _INT64_MIN <= obj <= _INT64_MAX else ["int", hex(obj)]
        if t is float:
            return _float(obj)
        slot = self.memo.get(id(obj))
        if slot is not None:
            slot.refs += 1
            return _Ref(slot)
        try:
            method = _EXACT.get(t)
            if method is not None:
                return method(self, obj)
            return self.enc_other(obj)
        except _Reject as e:
            raise self.error(obj, e.args[0]) from None

    def error(self, obj: Any, reason: str) -> UnencodableValueError:
        at = " at %s" % "".join(self.path) if self.path else ""
        return UnencodableValueError("cannot encode %s (type %s)%s%s: %s" % (
            short_repr(obj), _typename(obj), _in(self.where), at, reason))

    def child(self, step: str, obj: Any) -> Any:
        self.path.append(step)
        try:
            return self.enc(obj)
        finally:
            self.path.pop()

    def register(self, obj: Any, node: Any = None) -> _Slot:
        slot = _Slot()
        slot.node = node
        self.memo[id(obj)] = slot
        self.keep.append(obj)
        return slot

    def ref(self, cls: type) -> Any:
        try:
            r = self.classref(cls)
        except UnencodableValueError:
            raise
        except Exception as e:
            raise _Reject("cannot reference class %s: %s" % (cls.__qualname__, e))
        problem = plain_problem(r, "class reference")
        if problem:
            raise _Reject(problem)
        return r

    # mutable containers: registered before their items (so cycles resolve)
    def enc_list(self, obj: list) -> Any:
        node: list = ["list"]
        slot = self.register(obj, node)
        for i, item in enumerate(obj):
            node.append(self.child("[%d]" % i, item))
        return slot

    def enc_dict(self, obj: dict, tag: str = "dict") -> Any:
        node: list = [tag]
        slot = self.register(obj, node)
        for k, v in obj.items():
            step = "[%s]" % short_repr(k, 30)
            node.append([self.child(step + " key", k), self.child(step, v)])
        return slot

    def enc_odict(self, obj: OrderedDict) -> Any:
        return self.enc_dict(obj, "odict")

    def enc_set(self, obj: set) -> Any:
        node: list = ["set"]
        slot = self.register(obj, node)
        node.extend(self.child("{item}", item) for item in _ordered(obj))
        return slot

    def enc_bytearray(self, obj: bytearray) -> Any:
        return self.register(obj, ["bytearray", bytes(obj)])

    # immutable containers: registered after their items (pickle's approach to cycles)
    def enc_immutable(self, obj: Any, head: list, items: Any) -> Any:
        if not obj and type(obj) is tuple:
            return ["tuple"]
        if id(obj) in self.busy:  # reached again through a cycle: encode afresh
            return self.enc_immutable_fresh(obj, head, items)
        self.busy.add(id(obj))
        try:
            return self.enc_immutable_fresh(obj, head, items)
        finally:
            self.busy.discard(id(obj))

    def enc_immutable_fresh(self, obj: Any, head: list, items: Any) -> Any:
        node = head + [self.child("[%d]" % i, item) for i, item in enumerate(items)]
        inner = self.memo.get(id(obj))
        if inner is not None:  # a cycle re-encoded obj meanwhile: use that one
            inner.refs += 1
            return ["same", node, _Ref(inner)]
        return self.register(obj, node)

    def enc_tuple(self, obj: tuple) -> Any:
        return self.enc_immutable(obj, ["tuple"], obj)

    def enc_frozenset(self, obj: frozenset) -> Any:
        return self.enc_immutable(obj, ["frozenset"], _ordered(obj))

    # scalars and simple structures
    def enc_complex(self, obj: complex) -> Any:
        return ["complex", _float(obj.real), _float(obj.imag)]

    def enc_slice(self, obj: slice) -> Any:
        return ["slice", self.child(".start", obj.start), self.child(".stop", obj.stop),
                self.child(".step", obj.step)]

    def enc_range(self, obj: range) -> Any:
        return ["range", self.enc(obj.start), self.enc(obj.stop), self.enc(obj.step)]

    def enc_ellipsis(self, obj: Any) -> Any:
        return ["ellipsis"]

    # everything that is not an exact builtin type
    def enc_other(self, obj: Any) -> Any:
        if self.objref is not None:
            node = self.enc_objref(obj)
            if node is not None:
                return node
        if isinstance(obj, enum.Enum):
            return self.enc_enum(obj)
        torch = sys.modules.get("torch")
        if torch is not None:
            node = _enc_torch(self, obj, torch)
            if node is not None:
                return node
        np = sys.modules.get("numpy")
        if np is not None:
            node = _enc_numpy(self, obj, np)
            if node is not None:
                return node
        if isinstance(obj, type):
            return ["type", self.ref(obj)]
        cls = type(obj)
        if isinstance(obj, tuple) and hasattr(cls, "_fields") and _python_class(cls, tuple):
            return self.enc_immutable(obj, ["namedtuple", self.ref(cls)], obj)
        if not _python_class(cls):
            raise _Reject("unsupported type (values are captured without pickle; supported: %s)" % _SUPPORTED)
        return self.enc_instance(obj, cls)

    def enc_objref(self, obj: Any) -> Any:
        try:
            r = self.objref(obj)  # type: ignore[misc]
        except UnencodableValueError:
            raise
        except Exception as e:
            raise _Reject(str(e))
        if r is None:
            return None
        problem = plain_problem(r, "object reference")
        if problem:
            raise _Reject(problem)
        return ["objref", r]

    def enc_enum(self, obj: enum.Enum) -> Any:
        cls = type(obj)
        name = obj.name
        if isinstance(name, str) and cls.__members__.get(name) is obj:
            return ["enum", self.ref(cls), name]
        return ["enumvalue", self.ref(cls), self.child(".value", obj.value)]

    def enc_instance(self, obj: Any, cls: type) -> Any:
        ref = self.ref(cls)
        if getattr(cls, "__setstate__", None) is not None:
            getstate = getattr(obj, "__getstate__", None)
            state = getstate() if getstate is not None else obj.__dict__
            node: list = ["state", ref]
            slot = self.register(obj, node)
            self.keep.append(state)
            node.append(self.child(".__getstate__()", state))
            return slot
        attrs: list = []
        slots: list = []
        node = ["object", ref, attrs, slots]
        slot = self.register(obj, node)
        for name, value in getattr(obj, "__dict__", {}).items():
            if type(name) is not str:
                raise _Reject("instance __dict__ has a non-string key %s" % short_repr(name))
            attrs.append([name, self.child("." + name, value)])
        for name in _slot_names(cls):
            try:
                value = object.__getattribute__(obj, name)
            except AttributeError:
                continue  # unset slot
            slots.append([name, self.child("." + name, value)])
        return slot


_EXACT: Dict[type, Callable[[_Encoder, Any], Any]] = {
    list: _Encoder.enc_list,
    dict: _Encoder.enc_dict,
    OrderedDict: _Encoder.enc_odict,
    set: _Encoder.enc_set,
    bytearray: _Encoder.enc_bytearray,
    tuple: _Encoder.enc_tuple,
    frozenset: _Encoder.enc_frozenset,
    complex: _Encoder.enc_complex,
    slice: _Encoder.enc_slice,
    range: _Encoder.enc_range,
    type(Ellipsis): _Encoder.enc_ellipsis,
}


def _float(x: float) -> Any:
    if math.isfinite(x):
        return x
    if x == x:
        return ["float", "inf" if x > 0 else "-inf"]
    bits = struct.pack(">d", x).hex()
    return ["float", "nan" if bits == _CANONICAL_NAN else "nan:" + bits]


def _python_class(cls: type, base: type = object) -> bool:
    """True if ``cls`` was defined in Python on top of ``base``.

    Extension types can be heap types too, so (like CPython's own default
    ``__getstate__``) also require that instances hold nothing but a dict,
    a weakref list and slots -- no hidden C fields.
    """
    if not all(c.__flags__ & _HEAPTYPE for c in cls.__mro__ if c is not base and c is not object):
        return False
    if base is not object:
        return True
    ptr = struct.calcsize("P")
    size = object.__basicsize__ + ptr * len(_slot_names(cls))
    size += ptr * ((cls.__dictoffset__ > 0) + (cls.__weakrefoffset__ > 0))
    return cls.__itemsize__ == 0 and cls.__basicsize__ <= size


def _slot_names(cls: type) -> List[str]:
    names: List[str] = []
    for c in cls.__mro__:
        slots = c.__dict__.get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name in ("__dict__", "__weakref__"):
                continue
            if name.startswith("__") and not name.endswith("__"):
                name = "_%s%s" % (c.__name__.lstrip("_"), name)
            if name not in names:
                names.append(name)
    return names


def _ordered(items: Any) -> list:
    """Set items in a deterministic order when their types allow it."""
    items = list(items)
    try:
        return sorted(items, key=_sort_key)
    except _Unsortable:
        return items


class _Unsortable(Exception):
    pass


def _sort_key(x: Any) -> tuple:
    t = type(x)
    if x is None:
        return (0,)
    if t is bool:
        return (1, x)
    if t is int:
        return (2, x)
    if t is float:
        return (3, struct.pack(">d", x))
    if t is str:
        return (4, x)
    if t is bytes:
        return (5, x)
    if t is tuple:
        return (6, tuple(_sort_key(i) for i in x))
    if t is frozenset:
        return (7, tuple(sorted(_sort_key(i) for i in x)))
    if isinstance(x, enum.Enum):
        return (8, type(x).__module__, type(x).__qualname__, str(x.name))
    raise _Unsortable


# torch and numpy (only touched when the value is one of theirs) ------------------------

_INT_OF_SIZE = {1: "uint8", 2: "int16", 4: "int32", 8: "int64"}


def _enc_torch(enc: _Encoder, obj: Any, torch: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return enc.register(obj, _tensor_node(obj, torch))
    if isinstance(obj, torch.dtype):
        return ["dtype", _dtype_name(obj)]
    if isinstance(obj, torch.device):
        return ["device", str(obj)]
    if type(obj) is torch.Size:
        return ["size"] + [int(d) for d in obj]
    return None


def _dtype_name(dtype: Any) -> str:
    return str(dtype).split(".", 1)[1]


def _tensor_node(t: Any, torch: Any) -> list:
    cls = type(t)
    if cls is torch.nn.Parameter:
        tag = "parameter"
    elif cls is torch.Tensor:
        tag = "tensor"
    else:
        raise _Reject("tensor subclasses other than nn.Parameter are not supported")
    if t.is_quantized:
        raise _Reject("quantized tensors are not supported (dequantize() it first)")
    if t.layout != torch.strided or getattr(t, "is_nested", False):
        raise _Reject("only dense (strided) tensors are supported, not layout %s" % t.layout)
    device = str(t.device)
    shape = [int(d) for d in t.shape]
    data = None if t.device.type == "meta" else _tensor_bytes(t.detach(), torch)
    return [tag, _dtype_name(t.dtype), shape, data, bool(t.requires_grad), device]


def _tensor_bytes(t: Any, torch: Any) -> bytes:
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    same_size = _INT_OF_SIZE.get(t.element_size())
    if same_size is not None:  # reinterpret as a plain integer type: copies work for every dtype
        t = t.view(getattr(torch, same_size))
    t = t.cpu().contiguous().reshape(-1).view(torch.uint8)
    return t.numpy().tobytes()


def _enc_numpy(enc: _Encoder, obj: Any, np: Any) -> Any:
    if type(obj) is np.ndarray:
        descr = _np_descr(obj.dtype, np)
        return enc.register(obj, ["ndarray", descr, [int(d) for d in obj.shape], obj.tobytes()])
    if isinstance(obj, np.generic):
        arr = np.asarray(obj)
        return ["npscalar", _np_descr(arr.dtype, np), arr.tobytes()]
    if isinstance(obj, np.dtype):
        return ["npdtype", _np_descr(obj, np)]
    return None


def _np_descr(dtype: Any, np: Any) -> Any:
    if dtype.hasobject or dtype.kind not in "biufcmMSUV":
        raise _Reject("numpy dtype %s is not supported (object and custom dtypes cannot be captured)" % dtype)
    return _descr_tree(np.lib.format.dtype_to_descr(dtype))


def _descr_tree(d: Any) -> Any:
    if isinstance(d, str):
        return d
    if isinstance(d, (list, tuple)):
        return [_descr_tree(x) for x in d]
    if isinstance(d, int):
        return d
    raise _Reject("unsupported numpy dtype description %s" % short_repr(d))


def _descr_from_tree(d: Any) -> Any:
    if isinstance(d, str):
        return d
    fields = []
    for f in d:
        name = tuple(f[0]) if isinstance(f[0], list) else f[0]
        field = (name, _descr_from_tree(f[1]))
        if len(f) > 2:
            field += (tuple(f[2]),)
        fields.append(field)
    return fields


# -- decoding ----------------------------------------------------------------------------


def decode_value(tree: Any, *, resolve: Optional[Resolve] = None) -> Any:
    """Rebuild the object a value tree describes (shared references and cycles included)."""
    dec = _Decoder(resolve or default_resolve)
    try:
        return dec.dec(tree)
    except RecursionError:
        raise IRDecodeError("value tree is nested too deeply") from None


class _Decoder:
    def __init__(self, resolve: Resolve):
        self.resolve = resolve
        self.memo: Dict[int, Any] = {}

    def dec(self, t: Any, k: Optional[int] = None) -> Any:
        tt = type(t)
        if tt in _ATOMS or tt is int or tt is float:
            if k is not None:
                raise IRDecodeError("value tree: atom %s cannot be shared" % short_repr(t))
            return t
        if tt is not list or not t or type(t[0]) is not str:
            raise IRDecodeError("value tree: expected an atom or a [tag, ...] node, got %s" % short_repr(t))
        handler = _HANDLERS.get(t[0])
        if handler is None:
            raise IRDecodeError("value tree: unknown tag %r" % t[0])
        try:
            return handler(self, t, k)
        except IRDecodeError:
            raise
        except Exception as e:
            raise IRDecodeError("value tree: bad %r node %s: %s: %s" % (
                t[0], short_repr(t), type(e).__name__, e)) from e

    def bind(self, k: Optional[int], obj: Any) -> Any:
        if k is not None:
            if type(k) is not int or k in self.memo:
                raise IRDecodeError("value tree: bad or duplicate shared id %r" % (k,))
            self.memo[k] = obj
        return obj

    def items(self, t: list, start: int = 1) -> list:
        return [self.dec(x) for x in t[start:]]

    def d_shared(self, t: list, k: Any) -> Any:
        _arity(t, 3)
        return self.dec(t[2], t[1])

    def d_ref(self, t: list, k: Any) -> Any:
        _arity(t, 2)
        if t[1] not in self.memo:
            raise IRDecodeError("value tree: reference to unknown shared id %r" % (t[1],))
        return self.memo[t[1]]

    def d_same(self, t: list, k: Any) -> Any:
        _arity(t, 3)
        self.dec(t[1])
        return self.bind(k, self.dec(t[2]))

    def d_int(self, t: list, k: Any) -> Any:
        _arity(t, 2)
        return self.bind(k, int(t[1], 16))

    def d_float(self, t: list, k: Any) -> Any:
        _arity(t, 2)
        return self.bind(k, _float_from(t[1]))

    def d_complex(self, t: list, k: Any) -> Any:
        _arity(t, 3)
        return self.bind(k, complex(_num(t[1]), _num(t[2])))

    def d_list(self, t: list, k: Any) -> Any:
        obj = self.bind(k, [])
        obj.extend(self.dec(x) for x in t[1:])
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
        return self.bind(k, bytearray(_bytes(t[1])))

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

    def d_type(self, t: list, k: Any) -> Any:
        _arity(t, 2)
        return self.bind(k, self.resolve(t[1]))

    def d_objref(self, t: list, k: Any) -> Any:
        _arity(t, 2)
        return self.bind(k, self.resolve(t[1]))

    def d_enum(self, t: list, k: Any) -> Any:
        _arity(t, 3)
        cls = self.resolve(t[1])
        if t[0] == "enum":
            return self.bind(k, cls[t[2]])
        return self.bind(k, cls(self.dec(t[2])))

    def d_namedtuple(self, t: list, k: Any) -> Any:
        cls = self.resolve(t[1])
        return self.bind(k, cls(*self.items(t, 2)))

    def d_object(self, t: list, k: Any) -> Any:
        _arity(t, 4)
        cls = self.resolve(t[1])
        obj = self.bind(k, cls.__new__(cls))
        for name, value in t[2]:
            obj.__dict__[name] = self.dec(value)
        for name, value in t[3]:
            object.__setattr__(obj, name, self.dec(value))
        return obj

    def d_state(self, t: list, k: Any) -> Any:
        _arity(t, 3)
        cls = self.resolve(t[1])
        obj = self.bind(k, cls.__new__(cls))
        obj.__setstate__(self.dec(t[2]))
        return obj

    def d_tensor(self, t: list, k: Any) -> Any:
        _arity(t, 6)
        return self.bind(k, _tensor_from(t))

    def d_dtype(self, t: list, k: Any) -> Any:
        _arity(t, 2)
        return self.bind(k, _torch_dtype(t[1]))

    def d_device(self, t: list, k: Any) -> Any:
        _arity(t, 2)
        import torch

        return self.bind(k, torch.device(t[1]))

    def d_size(self, t: list, k: Any) -> Any:
        import torch

        return self.bind(k, torch.Size(t[1:]))

    def d_ndarray(self, t: list, k: Any) -> Any:
        _arity(t, 4)
        return self.bind(k, _ndarray_from(t[1], t[2], t[3]))

    def d_npscalar(self, t: list, k: Any) -> Any:
        _arity(t, 3)
        return self.bind(k, _ndarray_from(t[1], [], t[2])[()])

    def d_npdtype(self, t: list, k: Any) -> Any:
        _arity(t, 2)
        import numpy as np

        return self.bind(k, np.lib.format.descr_to_dtype(_descr_from_tree(t[1])))


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


def _bytes(b: Any) -> bytes:
    if type(b) is not bytes:
        raise IRDecodeError("value tree: expected bytes, got %s" % short_repr(b))
    return b


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


def _torch_dtype(name: Any) -> Any:
    import torch

    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(dtype, torch.dtype):
        raise IRDecodeError("value tree: unknown torch dtype %s (needs a newer torch?)" % short_repr(name))
    return dtype


def _tensor_from(t: list) -> Any:
    import torch

    tag, dtype_name, shape, data, requires_grad, device = t
    dtype = _torch_dtype(dtype_name)
    if data is None:
        x = torch.empty(shape, dtype=dtype, device="meta")
    else:
        x = _tensor_from_bytes(torch, _bytes(data), dtype, shape)
        if device != "cpu":
            try:  # device is a placement hint: keep the tensor on CPU if it is unavailable here
                x = x.to(device)
            except Exception:
                pass
    if tag == "parameter":
        return torch.nn.Parameter(x, requires_grad=bool(requires_grad))
    if requires_grad:
        x.requires_grad_(True)
    return x


def _tensor_from_bytes(torch: Any, data: bytes, dtype: Any, shape: list) -> Any:
    numel = 1
    for d in shape:
        numel *= d
    if numel * dtype.itemsize != len(data):
        raise IRDecodeError("value tree: tensor of shape %s and dtype %s needs %d bytes, got %d" % (
            shape, dtype, numel * dtype.itemsize, len(data)))
    if not data:
        return torch.empty(shape, dtype=dtype)
    flat = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    same_size = _INT_OF_SIZE.get(dtype.itemsize)
    if same_size is not None:
        flat = flat.view(getattr(torch, same_size)).view(dtype)
    else:
        flat = flat.view(dtype)
    return flat.reshape(shape)


def _ndarray_from(descr: Any, shape: list, data: Any) -> Any:
    import numpy as np

    dtype = np.lib.format.descr_to_dtype(_descr_from_tree(descr))
    data = _bytes(data)
    if not data or dtype.itemsize == 0:
        return np.zeros(shape, dtype=dtype)
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
