"""What captured code reads and imports: module globals, builtins, and imported modules.

A mixin of :class:`compiler.closure.capture.Closer`: each free name of a
captured definition and each of its imports is classified by the policy and the
access table, and captured (server modules by name, user modules by value) or
refused with a diagnostic at the import.
"""
from __future__ import annotations

import builtins
import sys
from typing import TYPE_CHECKING, Iterable, Optional

from .. import access, policy, unresolved
from ..ir.nodes import BIND_VALUE, Binding
from ..public_homes import refusal, stdlib_server_module
from .errors import CaptureRejected, Where
from .scan import SourceFacts, resolve_import

if TYPE_CHECKING:  # annotations only
    from .capture import _Module


class ImportCapture:
    """Reads and imports of captured code (needs the Closer's ``entry``, ``module_info``, ``reject``...)."""

    def _reads(self, info: _Module, facts: SourceFacts, base: Where, cells: Iterable[str]) -> None:
        skip = set(cells)
        for name in facts.free:
            if name in skip:
                continue
            w = base.at(name)
            if name in info.namespace:
                self.entry(info, name, w)
            elif self.remote and policy.is_dangerous_builtin(name) and hasattr(builtins, name):
                self.reject("NN301", w, "builtin '%s' is not available on the server: %s" % (
                    name, policy.DANGEROUS_BUILTINS[name]))

    def imports(self, facts: SourceFacts, package: Optional[str], base: Where) -> None:
        self._imports(facts, package, base)

    def _imports(self, facts: SourceFacts, package: Optional[str], base: Where,
                 home: Optional[_Module] = None) -> None:
        if home is not None and package is not None and any(f.level for f in facts.imports):
            # relative imports in this module's code resolve against its package on the server
            home.entries.setdefault("__package__", Binding("__package__", BIND_VALUE, package))
        for fact in facts.imports:
            name = resolve_import(fact, package)
            w = base.at(fact.bound or fact.module, fact.pos)
            w.name = ""
            if name is None or name == "__future__":
                continue
            kind = policy.classify_module(name)
            try:
                if kind != policy.USER:
                    self._refuse_module(name, kind, w)
                    if self.remote and fact.names:
                        for attr, _ in fact.names:
                            sub = name + "." + attr
                            reason = access.entry_refusal(sub)
                            if reason is not None and kind != policy.DANGEROUS:
                                raise self.reject("NN401", w, "'%s' is not available on the server: %s" % (
                                    sub, reason))
                            self._server_object(name, attr, w)
                    continue
                module = sys.modules.get(name)
                if module is None:
                    if self.remote and not fact.guarded and unresolved.is_unresolved(name):
                        raise self.reject(unresolved.CODE, w, unresolved.message(name), unresolved.HINT)
                    continue  # not importable here: it fails on the server as it would here
                info = self.module_info(name, module.__dict__, module)
                if fact.names:
                    for attr, bound in fact.names:
                        if attr == "*":
                            self._module_uses(info, Where(w.loc, w.source, "", w.pos))
                            continue
                        chains = facts.chains.get(bound, set())
                        if bound in facts.bare or not chains:
                            self._module_attr(info, (attr,), Where(w.loc, w.source, "", w.pos))
                        for chain in sorted(chains):
                            self._module_attr(info, (attr,) + chain, Where(w.loc, w.source, bound, w.pos, facts))
                else:
                    bound_module = name if fact.bound != name.split(".")[0] else name.split(".")[0]
                    target = sys.modules.get(bound_module, module)
                    tinfo = self.module_info(target.__name__, target.__dict__, target)
                    self._module_uses(tinfo, Where(w.loc, w.source, fact.bound, w.pos, facts))
            except CaptureRejected:
                pass

    def _server_object(self, module: str, attr: str, where: Where) -> None:
        """``from functools import RLock`` in captured code: refused as the object itself would be
        (the static checker's rule, :func:`compiler.public_homes.refusal`)."""
        mod = stdlib_server_module(module)
        if mod is None or attr not in mod.__dict__:
            return
        found = refusal(mod.__dict__[attr], attr)
        if found is not None:
            raise self.reject(found[0], where, found[1])
