"""Encoding: any supported Python object -> a value tree (see :mod:`compiler.ir.values`)."""
from __future__ import annotations

import enum
import struct
import sys
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional

from ..errors import UnencodableValueError
from .arrays import Reject as _Reject
from .arrays import enc_numpy, enc_torch
from .mappings import is_record_class, storage
from .common import (
    ATOMS,
    INT64_MAX,
    INT64_MIN,
    default_classref,
    encode_float,
    plain_problem,
    python_class,
    short_repr,
    slot_names,
    typename,
)

ClassRef = Callable[[type], Any]
ObjRef = Callable[[Any], Any]  # returns a plain-data reference, or None to encode the object normally

_SUPPORTED = (
    "None, bool, int, float, complex, str, bytes, bytearray, list, tuple, dict, set, "
    "frozenset, slice, range, Ellipsis, enum members, classes, dataclasses and plain "
    "class instances, torch tensors/dtypes/devices/sizes, numpy arrays/scalars/dtypes"
)


def encode_value(obj: Any, *, where: str = "", classref: Optional[ClassRef] = None,
                 objref: Optional[ObjRef] = None, records: bool = False, first_shared: int = 0) -> Any:
    """Encode ``obj`` as a value tree; raise UnencodableValueError naming what failed and ``where``.

    records: also write mapping records (``ModelOutput``, ``Counter``, ``OrderedDict``
    subclasses) as ``mapping`` nodes (:mod:`.mappings`); only for payloads whose framing
    is versioned for them (results), never for programs.
    first_shared: the first ``shared`` id to number from, for a tree that will be placed inside
    another one whose ids are all below it (the sandbox's results: runtime/sandbox/results.py).
    """
    enc = _Encoder(where, classref or default_classref, objref)
    enc.records = records
    try:
        raw = enc.enc(obj)
    except RecursionError:
        raise UnencodableValueError(
            "cannot encode %s: value is nested too deeply%s" % (short_repr(obj), _in(where))) from None
    return _finalize(raw, [first_shared])


def _in(where: str) -> str:
    return " (%s)" % where if where else ""


def _finalize(x: Any, counter: List[int]) -> Any:
    """Replace slots/refs by shared/ref nodes, numbering shared objects in tree order."""
    t = type(x)
    if t is _Slot:
        if x.refs:
            x.k = counter[0]
            counter[0] += 1
            return ["shared", x.k, x.node if x.leaf else _finalize(x.node, counter)]
        return x.node if x.leaf else _finalize(x.node, counter)
    if t is _Ref:
        return ["ref", x.slot.k]
    if t is list:
        return [_finalize(item, counter) for item in x]
    return x


class _Slot:
    """Placeholder for a memoized object's node; becomes ["shared", k, node] if referenced.

    leaf: the node holds plain data only (a tensor's), so finalizing need not walk it.
    """

    __slots__ = ("node", "refs", "k", "leaf")

    def __init__(self, node: Any = None, leaf: bool = False) -> None:
        self.node = node
        self.refs = 0
        self.k = -1
        self.leaf = leaf


class _Ref:
    __slots__ = ("slot",)

    def __init__(self, slot: _Slot):
        self.slot = slot


class _Encoder:
    def __init__(self, where: str, classref: ClassRef, objref: Optional[ObjRef] = None):
        self.where = where
        self.classref = classref
        self.objref = objref
        self.memo: Dict[int, _Slot] = {}
        self.keep: List[Any] = []  # keeps memoized objects alive so ids stay unique
        self.busy: set = set()  # ids of immutable containers being encoded
        self.path: List[Any] = []  # steps: str, or int (an item's index, formatted only in an error)
        self.records = False

    # entry point for every sub-value
    def enc(self, obj: Any) -> Any:
        t = type(obj)
        if t in ATOMS:
            return obj
        if t is int:
            return obj if INT64_MIN <= obj <= INT64_MAX else ["int", hex(obj)]
        if t is float:
            return encode_float(obj)
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
        at = " at %s" % "".join(s if type(s) is str else "[%d]" % s for s in self.path) if self.path else ""
        return UnencodableValueError("cannot encode %s (type %s)%s%s: %s" % (
            short_repr(obj), typename(obj), _in(self.where), at, reason))

    def child(self, step: str, obj: Any) -> Any:
        self.path.append(step)
        try:
            return self.enc(obj)
        finally:
            self.path.pop()

    def enc_items(self, node: list, items: Any) -> list:
        """Append the encoded items to node: like child() per item, without its per-item overhead."""
        path = self.path
        path.append(0)
        try:
            for i, item in enumerate(items):
                path[-1] = i
                node.append(self.enc(item))
        finally:
            path.pop()
        return node

    def register(self, obj: Any, node: Any = None, leaf: bool = False) -> _Slot:
        slot = _Slot(node, leaf)
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
        self.enc_items(node, obj)
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
        node = self.enc_items(list(head), items)
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
        return ["complex", encode_float(obj.real), encode_float(obj.imag)]

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
            node = enc_torch(self, obj, torch)
            if node is not None:
                return node
        np = sys.modules.get("numpy")
        if np is not None:
            node = enc_numpy(self, obj, np)
            if node is not None:
                return node
        if isinstance(obj, type):
            return ["type", self.ref(obj)]
        cls = type(obj)
        if self.records and isinstance(obj, dict) and is_record_class(cls):
            return self.enc_record(obj, cls)
        if isinstance(obj, tuple) and hasattr(cls, "_fields") and python_class(cls, tuple):
            return self.enc_immutable(obj, ["namedtuple", self.ref(cls)], obj)
        if not python_class(cls):
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

    def enc_record(self, obj: dict, cls: type) -> Any:
        """A mapping record: its class's public home, its items, its instance ``__dict__``."""
        try:
            ref = default_classref(cls)  # looked up by name where it is decoded, never imported
        except ValueError as e:
            raise _Reject("cannot reference mapping record class %s: %s" % (cls.__qualname__, e))
        items: list = []
        fields: list = []
        slot = self.register(obj, ["mapping", ref, items, fields])
        for k, v in storage(cls).items(obj):  # the storage's own items, never an overridden items()
            step = "[%s]" % short_repr(k, 30)
            items.append([self.child(step + " key", k), self.child(step, v)])
        for name, value in object.__getattribute__(obj, "__dict__").items():
            if type(name) is not str:
                raise _Reject("instance __dict__ has a non-string key %s" % short_repr(name))
            fields.append([name, self.child("." + name, value)])
        return slot

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
        for name in slot_names(cls):
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
