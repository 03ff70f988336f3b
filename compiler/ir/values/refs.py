"""References in value trees: who may turn a name from the wire into an object.

The decoder never imports anything. A reference (the second item of a
``type``, ``objref``, ``enum``, ``enumvalue``, ``namedtuple``, ``object`` or
``state`` node) is handed to the caller's ``resolve`` hook, which answers from
a table it owns: the server's loader (by-value definitions, and the modules and
objects its policy allows one by one), or the client's :class:`SentRefs` (the
objects its own request sent, by identity). Without a hook every reference is
refused.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator

from ..errors import IRDecodeError
from .common import REF_TAGS, short_repr


def refuse_references(ref: Any) -> Any:
    """The default ``resolve`` hook: a tree decoded without one may hold data only."""
    raise IRDecodeError("value tree names %s, but this decoder resolves no references (pass the resolve hook "
                        "of the request the value belongs to)" % short_repr(ref))


def ref_key(ref: Any) -> Any:
    """A hashable form of a plain-data reference."""
    t = type(ref)
    if t is list:
        return ("L",) + tuple(ref_key(x) for x in ref)
    if t is dict:
        return ("D",) + tuple(sorted((repr(k), ref_key(v)) for k, v in ref.items()))
    return (t.__name__, ref)


def refs_in(tree: Any) -> Iterator[Any]:
    """Every reference a value tree holds (iterative: any depth)."""
    stack = [tree]
    while stack:
        t = stack.pop()
        if type(t) is not list or not t:
            continue
        if type(t[0]) is str and t[0] in REF_TAGS and len(t) > 1:
            yield t[1]
            stack.extend(t[2:])
        else:
            stack.extend(t)


class SentRefs:
    """Resolves references to exactly the objects one side sent, by identity.

    Record each (reference, object) pair while encoding (:meth:`classref` and
    :meth:`objref` wrap the encoder's hooks); decoding the reply then resolves
    only those references, and builds instances only of the classes recorded.
    """

    def __init__(self) -> None:
        self.objects: Dict[Any, Any] = {}
        self.classes: Dict[int, type] = {}

    def add(self, ref: Any, obj: Any) -> None:
        self.objects[ref_key(ref)] = obj
        if isinstance(obj, type):
            self.classes[id(obj)] = obj

    def recording(self, hook: Any) -> Any:
        """Wrap a classref/objref hook so that every reference it returns is recorded."""

        def record(obj: Any) -> Any:
            ref = hook(obj)
            if ref is not None:
                self.add(ref, obj)
            return ref

        return record

    def resolve(self, ref: Any) -> Any:
        try:
            return self.objects[ref_key(ref)]
        except (KeyError, TypeError):
            raise IRDecodeError("value tree names %s, which was not sent from this side: refused (a reply may only "
                                "refer to the classes and functions its request sent)" % short_repr(ref)) from None

    def may_build(self, cls: type) -> bool:
        return self.classes.get(id(cls)) is cls
