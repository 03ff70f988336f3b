"""Mapping records: dict subclasses such as transformers' ``ModelOutput`` as data.

A model's output is often a *mapping record*: a dict subclass whose items are
its fields (``CausalLMOutputWithCrossAttentions`` is an ``OrderedDict`` and a
dataclass; ``output.logits is output["logits"]``). The encoder writes one as::

    ["mapping", "module:qualname", [[key, value], ...], [[attr, value], ...]]

the class's public home, its items in order, and its instance ``__dict__``
(for a ``ModelOutput``: every field, the ``None`` ones included). The decoder
rebuilds the class only when all of these hold:

* the caller's ``resolve`` hook answers the reference with a class (on the
  client, :class:`~compiler.closure.reply.ReplyResolver` answers it from modules
  *already loaded* in the client's process -- it never imports -- by walking
  module ``__dict__``s, so no module ``__getattr__`` runs);
* the class is a subclass of an allowlisted base that is itself already loaded
  (:data:`MAPPING_BASES`: ``transformers.utils.generic:ModelOutput``,
  ``collections:OrderedDict``, ``collections:Counter``);
* every class between it and its storage (``OrderedDict`` or ``dict``) is a
  plain Python class: no ``__slots__``, no hidden C fields, no overridden
  ``__dict__``, no ``__del__``.

It is rebuilt without running any code of the class or of the allowlisted base:
``OrderedDict.__new__(cls)`` (or ``dict.__new__``), each item through the
storage's own C ``__setitem__`` and each attribute straight into the instance
``__dict__`` -- never the class's ``__init__``, ``__post_init__``,
``__setitem__``, ``__setattr__`` or ``__setstate__``. For a ``ModelOutput``
that is exactly the state its documented construction (the dataclass
``__init__`` then ``__post_init__``) leaves: the non-``None`` fields as items,
every field as an attribute. A reference the decoder refuses outright (a
dangerous module, a dunder) is an error; a class the hook answers that is not a
mapping record is an error; a reference the hook cannot answer (the class is not
loaded here: a client without transformers, or no hook at all) decodes as a
:class:`MappingRecord` -- a plain ``dict`` of the items with attribute access
to the fields, and the class's name in :attr:`MappingRecord.record_class`.

Mapping records are written only where the caller asks for them
(``encode_value(..., records=True)``: results and local-block messages, whose
framing carries a version; see :func:`compiler.ir.request.encode_result`).
Programs never hold them, so the IR itself is unchanged.
"""
from __future__ import annotations

import sys
import types
from collections import OrderedDict
from typing import Any, Optional

from ..errors import IRDecodeError
from .common import short_repr, slot_names

# allowlisted bases: "module:qualname" of classes whose subclasses are mapping records
MAPPING_BASES = ("transformers.utils.generic:ModelOutput", "collections:OrderedDict", "collections:Counter")
_STORAGES = (OrderedDict, dict)  # what the instance really is underneath (C types)
_PTR = 8 if sys.maxsize > 2 ** 32 else 4


class MappingRecord(dict):
    """A mapping record whose class is not available here: its items, with attribute access.

    ``record["logits"]`` and ``record.logits`` both work; fields that were not items
    (a ``ModelOutput``'s ``None`` fields) are attributes only. ``record_class`` is the
    ``"module:qualname"`` the sender named (data: nothing was imported or looked up).
    """

    record_class: str = ""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError("%s record has no field %r" % (self.record_class or "mapping", name)) from None

    def __repr__(self) -> str:
        return "MappingRecord(%s, %s)" % (self.record_class, dict.__repr__(self))


def loaded(ref: str) -> Any:
    """The object ``"module:qualname"`` names in modules already loaded here, or None (never imports)."""
    if not isinstance(ref, str) or ref.count(":") != 1:
        return None
    mod, qual = ref.split(":")
    obj: Any = sys.modules.get(mod)
    for part in qual.split("."):
        if obj is None or not part or (part.startswith("__") and part.endswith("__")):
            return None
        d = getattr(obj, "__dict__", None)  # a module's or class's own namespace: no __getattr__ runs
        obj = d.get(part) if isinstance(d, (dict, types.MappingProxyType)) else None
    return obj


def record_base(cls: Any) -> Optional[type]:
    """The allowlisted (and loaded) base ``cls`` is a mapping record of, or None."""
    if not isinstance(cls, type):
        return None
    for name in MAPPING_BASES:
        base = loaded(name)
        if isinstance(base, type) and issubclass(cls, base):
            return base
    return None


def storage(cls: type) -> type:
    return OrderedDict if issubclass(cls, OrderedDict) else dict


def layout_problem(cls: type) -> Optional[str]:
    """Why instances of ``cls`` cannot be a mapping record's state, or None when they can."""
    core = storage(cls)
    for c in cls.__mro__:
        if c is core:
            break
        if not c.__flags__ & (1 << 9):  # Py_TPFLAGS_HEAPTYPE: defined in Python
            return "its base %s is not a Python class" % c.__qualname__
        if "__del__" in c.__dict__:
            return "it defines __del__"
        d = c.__dict__.get("__dict__")
        if d is not None and type(d) is not types.GetSetDescriptorType:
            return "it overrides __dict__"
    if slot_names(cls):
        return "it has __slots__"
    if cls.__itemsize__ != core.__itemsize__ or cls.__basicsize__ > core.__basicsize__ + 2 * _PTR:
        return "its instances hold C fields beyond those of %s" % core.__qualname__
    return None


def is_record_class(cls: Any) -> bool:
    """May instances of ``cls`` travel as mapping records (encoded, and rebuilt where it is loaded)?"""
    return record_base(cls) is not None and layout_problem(cls) is None


def check_record_class(cls: Any, ref: Any) -> type:
    """``cls`` (what the hook resolved ``ref`` to) if it may be rebuilt; IRDecodeError otherwise."""
    if not isinstance(cls, type):
        raise IRDecodeError("value tree: 'mapping' node names %s, which is not a class" % short_repr(ref))
    if record_base(cls) is None:
        raise IRDecodeError("value tree: 'mapping' node names %s, which is not a subclass of a mapping record "
                            "base (%s): refused" % (short_repr(ref), ", ".join(MAPPING_BASES)))
    problem = layout_problem(cls)
    if problem:
        raise IRDecodeError("value tree: 'mapping' node names %s, which is not rebuilt from data: %s" % (
            short_repr(ref), problem))
    return cls


def new_record(cls: Optional[type], ref: Any) -> Any:
    """An empty instance of ``cls`` made without its code (a :class:`MappingRecord` for None)."""
    if cls is None:
        obj = MappingRecord()
        obj.record_class = ref if isinstance(ref, str) else ""
        return obj
    return storage(cls).__new__(cls)


def string_keys(cls: Optional[type]) -> bool:
    """Does a record of ``cls`` hold only string keys (a ``ModelOutput``'s items are its fields)?"""
    base = loaded(MAPPING_BASES[0])
    return cls is not None and isinstance(base, type) and issubclass(cls, base)


def set_item(obj: Any, key: Any, value: Any, only_strings: bool) -> None:
    """Store one item through the storage's own C ``__setitem__`` (never the class's)."""
    if only_strings and type(key) is not str:
        raise IRDecodeError("value tree: a %s record's keys are field names, got %s" % (
            type(obj).__qualname__, short_repr(key)))
    storage(type(obj)).__setitem__(obj, key, value)


def field_name(name: Any) -> str:
    """``name`` if it may name a mapping record's field (a plain, non-dunder string)."""
    if type(name) is not str or not name or len(name) > 256 or (name.startswith("__") and name.endswith("__")) \
            or name == "record_class":
        raise IRDecodeError("value tree: a mapping record's field name must be a plain string, got %s" %
                            short_repr(name))
    return name


def set_attr(obj: Any, name: str, value: Any) -> None:
    """Store one field straight into the instance ``__dict__`` (never ``__setattr__``)."""
    object.__getattribute__(obj, "__dict__")[name] = value
