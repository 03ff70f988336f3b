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
    ["mapping", "mod:qual", [[k, v], ...], [[field, v], ...]]
                                        a mapping record (ModelOutput, Counter...): results only
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

Decoding is data only (the trees come from another machine):

* the decoder imports nothing and calls nothing named by the tree: a ``ref``
  naming a dangerous module or builtin, or a dunder attribute, is refused
  outright (:mod:`.refs`); any other goes to the caller's ``resolve`` hook
  (default: refuse), which answers from its own table -- the server's loader
  (by-value definitions, modules and objects its policy allows), the client's
  ``compiler.closure.reply.ReplyResolver`` or a :class:`SentRefs` (what that
  side sent, by identity);
* ``object``/``state``/``namedtuple`` nodes rebuild instances only of classes
  the ``may_build`` hook accepts (the request's by-value classes) or of the
  fixed server types (:data:`~.instances.SERVER_TYPE_MODULES`), field by field:
  no ``__new__``, ``__init__``, ``__setstate__``, ``__setattr__`` or
  ``__reduce__`` of theirs runs (:mod:`.instances`); enum members are looked up;
* ``mapping`` nodes rebuild a class only if ``resolve`` answers with an allowlisted
  mapping record class, without its code; else a plain :class:`~.mappings.MappingRecord`
  (:mod:`.mappings`);
* tensors and arrays take their dtype from a fixed table (no numpy object
  dtypes) and are sized before allocation; depth, node count and sizes are
  bounded (:class:`~compiler.ir.limits.DecodeLimits`).

Every failure is an :class:`~compiler.ir.errors.IRDecodeError`
(:class:`~compiler.ir.errors.IRLimitError` for a limit).

Modules: :mod:`.common` (shared helpers), :mod:`.encoder`, :mod:`.decoder`,
:mod:`.instances` (rebuilding class instances), :mod:`.arrays` (torch and
numpy), :mod:`.refs` (resolving references).
"""
from .arrays import tensor_bytes  # noqa: F401
from .common import default_classref, lookup_qualname, plain_problem, short_repr  # noqa: F401
from .decoder import MayBuild, Resolve, decode_value  # noqa: F401
from .encoder import ClassRef, ObjRef, encode_value  # noqa: F401
from .instances import SERVER_TYPE_MODULES, may_build_server_type  # noqa: F401
from .mappings import MappingRecord  # noqa: F401
from .refs import SentRefs, ref_key, refs_in, refuse_references  # noqa: F401

default_resolve = refuse_references  # the old name: a tree decoded without a hook holds data only
