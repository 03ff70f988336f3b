"""What remote code may touch: the attribute rules and the per-module tables.

One table, ``compiler/data/server_access.json``, read here and used by both
sides: the server's loader (:mod:`runtime.guards`) enforces it on every
attribute access of user code, and the client's checker
(:mod:`compiler.analysis`) reports the same findings, with the same codes, at
the user's file:line:col before anything is sent.

Attribute names fall in four classes (:func:`attribute_class`):

* ``"refused"`` -- interpreter internals, refused on every object: dunder
  names outside :data:`SAFE_DUNDERS` and the frame / code / generator /
  traceback attributes of :data:`INTROSPECTION_ATTRIBUTES`;
* ``"mediated"`` -- ``__getattr__`` & co.: allowed, but the name they are
  later called with passes the same checks;
* ``"private"`` -- ``_name``: allowed on the request's own objects, refused
  on the server's;
* ``"public"`` -- allowed, subject to the module table.

:func:`entry_refusal` answers for a dotted path inside a server module
(``"torch.save"``, ``"numpy.ndarray.tofile"``, ``"compiler.policy"``): the
reason it is refused, or None. Refused entries get the same diagnostic as a
refused module (NN401 on the client, :class:`ServerImportError` on the server).
"""
from __future__ import annotations

import json
import os
import types
from typing import Dict, FrozenSet, Mapping, Optional

from . import policy

_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "server_access.json")

with open(_DATA, encoding="utf-8") as _f:
    _TABLE = json.load(_f)

REFUSED, MEDIATED, PRIVATE, PUBLIC = "refused", "mediated", "private", "public"

#: Dunder names user code may use on any object -> what they are for.
SAFE_DUNDERS: Mapping[str, str] = types.MappingProxyType(dict(_TABLE["safe_dunders"]))
#: ``__getattr__``-like dunders: allowed, with the name they are called with checked.
MEDIATED_DUNDERS: Mapping[str, str] = types.MappingProxyType(dict(_TABLE["mediated_dunders"]))
#: Non-dunder attributes refused on every object -> what they reach.
INTROSPECTION_ATTRIBUTES: Mapping[str, str] = types.MappingProxyType(dict(_TABLE["introspection_attributes"]))

#: Dunder names a request's code may not define (in a class body or anywhere): protocols through
#: which numpy and torch read or write raw memory at an address the object names -> why.
NATIVE_PROTOCOLS: Mapping[str, str] = types.MappingProxyType(dict(_TABLE["native_protocols"]))

#: Names a request may never bind or read as a variable: they change how code itself runs.
RESERVED_NAMES: FrozenSet[str] = frozenset((
    "__builtins__", "__import__", "__build_class__", "__loader__", "__spec__", "__cached__"))
#: Prefix of the names the server's guards use; user code cannot name them.
GUARD_PREFIX = "__nnsight_"

_MODULES: Dict[str, dict] = _TABLE["modules"]
#: top-level module -> {dotted path inside it -> reason} (``"torch"`` -> {``"save"``: ...}).
REFUSED_ENTRIES: Mapping[str, Mapping[str, str]] = types.MappingProxyType({
    top: types.MappingProxyType(dict(spec.get("refuse", {}))) for top, spec in _MODULES.items()})
#: top-level module -> {``Class.method`` path -> reason}: refused on the server's objects only, allowed on
#: the request's own (``hosted_layer.to("cuda")`` changes the model every request shares; ``my_probe.to``
#: of the request's own ``nn.Module`` subclass is fine).
SHARED_ENTRIES: Mapping[str, Mapping[str, str]] = types.MappingProxyType({
    top: types.MappingProxyType(dict(spec["refuse_shared"])) for top, spec in _MODULES.items()
    if "refuse_shared" in spec})
#: top-level module -> {class path -> why}: instances whose attributes a request may not assign or delete
#: unless the request made the class (the hosted model's layers, weights, configuration, tokenizer).
READ_ONLY_CLASSES: Mapping[str, Mapping[str, str]] = types.MappingProxyType({
    top: types.MappingProxyType(dict(spec["read_only"])) for top, spec in _MODULES.items() if "read_only" in spec})
#: top-level module -> {path -> why}: the only paths a request may reach in it (absent: no such limit).
ONLY_ENTRIES: Mapping[str, Mapping[str, str]] = types.MappingProxyType({
    top: types.MappingProxyType(dict(spec["only"])) for top, spec in _MODULES.items() if "only" in spec})
#: top-level package -> {method name -> reason}: refused on every object whose class comes from it.
REFUSED_METHODS: Mapping[str, Mapping[str, str]] = types.MappingProxyType({
    top: types.MappingProxyType(dict(spec["refuse_methods"])) for top, spec in _MODULES.items()
    if "refuse_methods" in spec})


def is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def attribute_class(name: str) -> str:
    """``"refused"``, ``"mediated"``, ``"private"`` or ``"public"`` (see the module docstring)."""
    if is_dunder(name):
        if name in SAFE_DUNDERS:
            return PUBLIC
        return MEDIATED if name in MEDIATED_DUNDERS else REFUSED
    if name in INTROSPECTION_ATTRIBUTES:
        return REFUSED
    return PRIVATE if name.startswith("_") else PUBLIC


_DUNDER_REASONS: Mapping[str, str] = types.MappingProxyType(dict(_TABLE["refused_dunder_reasons"]))


def attribute_reason(name: str) -> str:
    """Why attribute ``name`` is refused on every object (one phrase)."""
    what = INTROSPECTION_ATTRIBUTES.get(name) or _DUNDER_REASONS.get(name)
    if what is None:
        return "it is an interpreter internal (only a documented set of dunder attributes is available)"
    return "it reaches %s" % what


def reserved_name(name: str) -> bool:
    """A variable name user code may not use (``__builtins__``, the guards' names, ...)."""
    return name in RESERVED_NAMES or name.startswith(GUARD_PREFIX)


def entry_refusal(path: str) -> Optional[str]:
    """Why dotted ``path`` (a module, or an attribute path inside one) is refused, or None.

    Covers refused modules (the policy), refused entries of allowed modules and
    paths outside an ``only`` table. A refused prefix refuses what is below it.
    """
    if policy.classify_module(path) == policy.DANGEROUS:
        return policy.module_reason(path)
    top, _, rest = path.partition(".")
    if not rest:
        return None
    refused = REFUSED_ENTRIES.get(top)
    if refused:
        parts = rest.split(".")
        for i in range(1, len(parts) + 1):
            reason = refused.get(".".join(parts[:i]))
            if reason is not None:
                return reason
    only = ONLY_ENTRIES.get(top)
    if only is not None and not is_dunder(rest.split(".")[0]) and not any(rest == p or rest.startswith(p + ".") or p.startswith(rest + ".")
                                    for p in only):
        return "only %s of %r is available to a request" % (
            ", ".join(repr(top + "." + p) for p in sorted(only)), top)
    return None


def method_refusal(package: str, name: str) -> Optional[str]:
    """Why method ``name`` of a class from top-level package ``package`` is refused, or None."""
    table = REFUSED_METHODS.get(package)
    return table.get(name) if table else None


def refused_method_name(name: str) -> Optional[str]:
    """Why a method of this name is refused on some server package's classes, or None
    (``save_pretrained``): for a traced call, whose method name comes from the request."""
    for table in REFUSED_METHODS.values():
        if name in table:
            return table[name]
    return None


#: Builtins the server replaces with a refusal -> why (dangerous ones and the table's).
def refused_builtins() -> Dict[str, str]:
    out = dict(policy.DANGEROUS_BUILTINS)
    out.update(REFUSED_ENTRIES.get("builtins", {}))
    out.setdefault("input", "there is no terminal on the server")
    out.setdefault("breakpoint", "there is no terminal on the server")
    return out
