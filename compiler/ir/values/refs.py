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

import re
import types
from typing import Any, Dict, Iterator

from ... import policy
from ..errors import IRDecodeError
from .common import REF_TAGS, short_repr

_NAME_REF = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


def refuse_references(ref: Any) -> Any:
    """The default ``resolve`` hook: a tree decoded without one may hold data only."""
    raise IRDecodeError("value tree names %s, but this decoder resolves no references (pass the resolve hook "
                        "of the request the value belongs to)" % short_repr(ref))


def check_reference(ref: Any) -> None:
    """Refuse, before any hook sees it, a reference no policy could allow.

    Whatever the hook's table says, a value tree never names: a module the
    server policy calls dangerous (``os``, ``subprocess``, ``importlib``,
    ``pickle``...), a dangerous builtin (``builtins:eval``), or a dunder
    attribute (``__globals__``, ``__subclasses__``, ``__builtins__``...).
    """
    if isinstance(ref, str):
        if len(ref) > 512 or not _NAME_REF.match(ref):
            raise IRDecodeError("value tree: malformed reference %s (expected 'module:qualname')" % short_repr(ref))
        mod, qual = ref.split(":")
        _check_module(mod, ref)
        parts = qual.split(".")
        _check_parts(parts, ref)
        if mod == "builtins" and policy.is_dangerous_builtin(parts[0]):
            raise IRDecodeError("value tree names builtin %r, which is never available: %s" % (
                parts[0], policy.DANGEROUS_BUILTINS[parts[0]]))
        return
    if type(ref) is list and ref and type(ref[0]) is str:
        if ref[0] == "module" and len(ref) == 2 and type(ref[1]) is str:
            _check_module(ref[1], ref)
        elif ref[0] == "def":
            _check_parts(ref[2:], ref)
        elif ref[0] == "model" and len(ref) == 2 and type(ref[1]) is str:
            _check_parts(ref[1].split("."), ref)
        return
    if type(ref) is not list:
        raise IRDecodeError("value tree: malformed reference %s" % short_repr(ref))


def check_resolved(ref: Any, obj: Any) -> None:
    """Refuse what a hook answered if it leads to a refused module: an allowed module's attribute
    can be one (``torch:os``, ``logging:sys``), or a function or class of one (``torch:os.system``)."""
    if isinstance(obj, types.ModuleType):
        name = obj.__dict__.get("__name__")
        refused = isinstance(name, str) and bool(name) and policy.classify_module(name) == policy.DANGEROUS
    elif isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
        # by the package it comes from: C helpers of harmless modules (``_operator``) stay usable
        name = getattr(obj, "__module__", None)
        refused = isinstance(name, str) and name.split(".", 1)[0] in policy.DANGEROUS_MODULES
    else:
        return
    if refused:
        raise IRDecodeError("value tree names %s, which leads to module %r: %s" % (
            short_repr(ref), name, policy.module_reason(name)))


def _check_module(mod: Any, ref: Any) -> None:
    if type(mod) is not str or not mod or policy.classify_module(mod) == policy.DANGEROUS:
        raise IRDecodeError("value tree names %s: module %r is never available on the wire (%s)" % (
            short_repr(ref), mod, policy.module_reason(mod) if type(mod) is str and mod else "no name"))


def _check_parts(parts: Any, ref: Any) -> None:
    for part in parts:
        if type(part) is not str or not part or (part.startswith("__") and part.endswith("__")):
            raise IRDecodeError("value tree names %s: attribute %s is never reachable through a reference" % (
                short_repr(ref), short_repr(part)))


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
