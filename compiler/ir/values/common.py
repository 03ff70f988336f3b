"""Helpers shared by the value encoder, the decoder, the printer and the verifier."""
from __future__ import annotations

import math
import struct
import sys
from typing import Any, List, Optional

INT64_MIN = -(2 ** 63)
INT64_MAX = 2 ** 63 - 1
ATOMS = (type(None), bool, str, bytes)
_CANONICAL_NAN = "7ff8000000000000"
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: the class was defined in Python

# the tags whose second item is a reference (handed to the ``resolve`` hook)
REF_TAGS = frozenset(("type", "objref", "enum", "enumvalue", "namedtuple", "object", "state"))


def short_repr(obj: Any, limit: int = 60) -> str:
    """A one-line repr of ``obj``, truncated; never raises."""
    try:
        r = repr(obj)
    except Exception:
        r = "<%s object>" % type(obj).__name__
    r = " ".join(r.split())
    return r if len(r) <= limit else r[: limit - 3] + "..."


_PLAIN_ATOMS = frozenset((type(None), bool, str, bytes, int, float))
_PLAIN_DEPTH = 256  # deeper trees take the recursive walk (and its RecursionError), as before


def plain_problem(value: Any, path: str = "value") -> Optional[str]:
    """Why ``value`` is not plain data (atoms, lists, dicts), or None if it is.

    The common answer (plain) is found by one iterative walk that builds no paths; only a tree
    that is not plain (or very deep) is walked again to name where.
    """
    if _is_plain(value):
        return None
    return _problem(value, path)


def _is_plain(value: Any) -> bool:
    atoms = _PLAIN_ATOMS
    stack = [(value, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        v, depth = pop()
        t = type(v)
        if t in atoms:
            continue
        if depth >= _PLAIN_DEPTH:
            return False
        if t is list:
            for item in v:
                if type(item) not in atoms:
                    push((item, depth + 1))
        elif t is dict:
            for k, item in v.items():
                if type(k) not in atoms:
                    push((k, depth + 1))
                if type(item) not in atoms:
                    push((item, depth + 1))
        else:
            return False
    return True


def _problem(value: Any, path: str = "value") -> Optional[str]:
    t = type(value)
    if t in ATOMS or t is int or t is float:
        return None
    if t is list:
        for i, item in enumerate(value):
            p = _problem(item, "%s[%d]" % (path, i))
            if p:
                return p
        return None
    if t is dict:
        for k, v in value.items():
            p = _problem(k, path + " key") or _problem(v, "%s[%s]" % (path, short_repr(k, 20)))
            if p:
                return p
        return None
    return "%s is a %s (%s); only None, bool, int, float, str, bytes, list and dict are plain data" % (
        path, typename(value), short_repr(value, 40))


def typename(obj: Any) -> str:
    t = type(obj)
    mod = getattr(t, "__module__", "")
    return t.__qualname__ if mod in ("builtins", "") else "%s.%s" % (mod, t.__qualname__)


def lookup_qualname(module: Any, qualname: str) -> Any:
    """``module.<qualname>`` (dotted), or None where an attribute is missing."""
    obj = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


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


def encode_float(x: float) -> Any:
    if math.isfinite(x):
        return x
    if x == x:
        return ["float", "inf" if x > 0 else "-inf"]
    bits = struct.pack(">d", x).hex()
    return ["float", "nan" if bits == _CANONICAL_NAN else "nan:" + bits]


def python_class(cls: type, base: type = object) -> bool:
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
    size = object.__basicsize__ + ptr * len(slot_names(cls))
    size += ptr * ((cls.__dictoffset__ > 0) + (cls.__weakrefoffset__ > 0))
    return cls.__itemsize__ == 0 and cls.__basicsize__ <= size


def slot_names(cls: type) -> List[str]:
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
