"""The client's side of a reply: resolve only what the request itself sent.

A result comes back from a server the client does not control. Its value tree
may name classes and functions (a saved instance of the user's dataclass, an
``nn.Linear`` layer); the client resolves each name only if its own request
sent that same name -- to the same object, by identity, from modules already
loaded here -- or if it names one of the fixed server types the wire may carry.
Nothing is imported, and an instance is rebuilt only for a class the request
sent (or a fixed server type): a hostile reply naming ``os:system`` is refused
with :class:`~compiler.ir.errors.IRDecodeError`. A mapping record's class (a
``ModelOutput`` subclass, :mod:`compiler.ir.values.mappings`) is answered when it
is already loaded here; its instances are rebuilt by the decoder's fixed rule.
"""
from __future__ import annotations

import logging
import sys
from typing import Any, Callable, Dict, Iterable, List, Optional

from ..ir.errors import IRDecodeError
from ..ir.nodes import BIND_BUILTIN, BIND_MODULE, BIND_OBJECT, BIND_VALUE, Binding, Program
from ..ir.values import may_build_server_type, ref_key, refs_in, short_repr
from ..ir.values.mappings import is_record_class, loaded


def sent_references(program: Program, inputs: Iterable[Any]) -> Dict[Any, Any]:
    """Every reference the request names (keyed by :func:`ref_key`), mapped to the reference."""
    sent: Dict[Any, Any] = {}

    def add(ref: Any) -> None:
        try:
            sent[ref_key(ref)] = ref
        except TypeError:
            pass

    bindings: List[Binding] = list(program.bindings)
    for d in program.definitions:
        bindings += list(d.globals) + list(d.cells) + list(d.attrs)
    for b in bindings:
        if b.kind == BIND_OBJECT and isinstance(b.value, str):
            add(b.value)
        elif b.kind == BIND_MODULE and isinstance(b.value, str):
            add(["module", b.value])
        elif b.kind == BIND_BUILTIN and isinstance(b.value, str):
            add("builtins:" + b.value)
        elif b.kind == BIND_VALUE:
            for ref in refs_in(b.value):
                add(ref)
    for tree in inputs:
        for ref in refs_in(tree):
            add(ref)
    return sent


class ReplyResolver:
    """``resolve`` and ``may_build`` hooks for decoding one request's reply on the client."""

    def __init__(self, program: Program, objects: List[Any], inputs: Iterable[Any],
                 envoy_at: Optional[Callable[[str], Any]] = None, tracer: Any = None):
        self.objects = objects
        self.sent = sent_references(program, inputs)
        self.envoy_at = envoy_at
        self.tracer = tracer
        self.built: Dict[int, Any] = {}  # classes the request sent (by value or by name)
        for obj in objects:
            if isinstance(obj, type):
                self.built[id(obj)] = obj

    def resolve(self, ref: Any) -> Any:
        obj = self._resolve(ref)
        if isinstance(obj, type) and ref_key(ref) in self.sent:
            self.built.setdefault(id(obj), obj)
        return obj

    def may_build(self, cls: type) -> bool:
        return self.built.get(id(cls)) is cls or may_build_server_type(cls)

    def _resolve(self, ref: Any) -> Any:
        if isinstance(ref, list) and ref:
            tag = ref[0]
            if tag == "def" and len(ref) >= 2 and type(ref[1]) is int and 0 <= ref[1] < len(self.objects):
                if len(ref) == 2:
                    return self.objects[ref[1]]
                self._check_sent(ref)
                obj = self.objects[ref[1]]
                for part in ref[2:]:
                    obj = getattr(obj, part)
                return obj
            if tag == "model" and len(ref) == 2 and self.envoy_at is not None and _envoy_path(ref[1]):
                return self.envoy_at(ref[1])
            if tag == "tracer" and len(ref) == 1 and self.tracer is not None:
                return self.tracer
            if tag == "module" and len(ref) == 2:
                self._check_sent(ref)
                return self._loaded(ref[1], ref)
            if tag == "logger" and len(ref) == 2 and isinstance(ref[1], str):
                self._check_sent(ref)
                return logging.getLogger(ref[1])
        if isinstance(ref, str) and ref.count(":") == 1:
            if ref_key(ref) in self.sent:  # the same name the request sent, to the object it names here
                mod, qual = ref.split(":")
                return self._named(mod, qual, ref)
            # otherwise only from module and class namespaces already loaded: no module __getattr__
            # runs (a lazy package such as transformers would import on attribute access)
            obj = loaded(ref)
            if is_record_class(obj) or (isinstance(obj, type) and may_build_server_type(obj)):
                return obj  # a mapping record class (ModelOutput...), or a fixed server type
        raise IRDecodeError("the reply names %s, which the request did not send: refused (a reply may only "
                            "refer to the classes and functions its request sent)" % short_repr(ref))

    def _check_sent(self, ref: Any) -> None:
        if ref_key(ref) not in self.sent:
            raise IRDecodeError("the reply names %s, which the request did not send: refused" % short_repr(ref))

    def _loaded(self, name: Any, ref: Any) -> Any:
        module = sys.modules.get(name) if isinstance(name, str) else None
        if module is None:  # never imported on the server's say-so
            raise IRDecodeError("the reply names module %s, which is not loaded here: refused" % short_repr(name))
        return module

    def _named(self, mod: str, qual: str, ref: str) -> Any:
        module = self._loaded(mod, ref)
        obj: Any = module
        for part in qual.split("."):
            if not part or (part.startswith("__") and part.endswith("__")):
                break
            obj = getattr(obj, part, None)
            if obj is None:
                break
        else:
            return obj
        raise IRDecodeError("the reply names %s, which does not exist here: refused" % short_repr(ref))


def _envoy_path(path: Any) -> bool:
    return isinstance(path, str) and not any(p.startswith("__") for p in path.split("."))
