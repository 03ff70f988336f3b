"""The closure pass: from a program template and live values to a complete Program.

Rules (see :mod:`compiler.closure` for the overview):

* envoys of the traced model -> BIND_MODEL (their path); the trace's tracer -> BIND_TRACER;
* modules, and classes/functions/objects of modules, are classified by
  :mod:`compiler.policy`: server modules go by name (BIND_MODULE / BIND_OBJECT
  ``"module:qualname"``); user modules go by value; dangerous and installed
  ones are rejected when compiling for a remote target;
* user code goes by value as :class:`~compiler.ir.nodes.Definition` s:

  - a module-level ``def``/``class`` (or ``name = ...`` statement making a class
    or a decorated function) is a DEF_STATEMENT, re-run from source in its
    module's namespace, decorators included;
  - any other function (closures, lambdas -- told apart by column when several
    share a line --, nested functions, the undecorated original of a decorated
    function) is a DEF_LOCAL: its own source, its closure cells and its
    defaults captured as values;
  - each user module touched gets one DEF_MODULE listing, in module order, the
    globals the captured code reads (recursively closed over), so definitions
    of one module share one namespace, as they do locally;
  - user modules referenced as objects (``mylib.f(...)``) or imported in
    captured code become DEF_MODULE s holding the attributes used;

* builtins -> BIND_BUILTIN (dangerous ones rejected);
* everything else is data: a value tree (:mod:`compiler.ir.values`) whose
  classes and functions are captured by the same rules. Module-level data of
  the trace's own (user) module becomes a global of that module's DEF_MODULE
  and is bound by name, so functions of that module see the same object.
"""
from __future__ import annotations

import __future__
import builtins
import re
import logging
import sys
import types
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

from .. import access, policy
from ..diagnostics import DiagnosticError
from ..ir.errors import UnencodableValueError
from ..ir.nodes import (
    BIND_BUILTIN,
    BIND_CLASS,
    BIND_FUNCTION,
    BIND_MODEL,
    BIND_MODULE,
    BIND_OBJECT,
    BIND_RUNTIME,
    BIND_TRACER,
    BIND_VALUE,
    DEF_MODULE,
    Binding,
    Definition,
    Program,
    SourceLoc,
)
from ..ir.values import encode_value, lookup_qualname, short_repr
from ..public_homes import server_ref
from .errors import HINTS, CaptureRejected, Where, diagnostic
from .definitions import DefinitionCapture
from .imports import ImportCapture
from .scan import Chain

_MISSING = object()
_FUTURE_ANNOTATIONS = getattr(__future__, "annotations", None)
_FUNCTION_TYPES = (
    types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.BuiltinMethodType,
    types.MethodWrapperType, types.WrapperDescriptorType, types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
)
_ATOMS = (type(None), bool, int, float, complex, str, bytes)


def default_model_path(obj: Any) -> Optional[str]:
    """Duck-typed envoy detection: nnsight's Envoy (or ``__nnsight_envoy_path__``)."""
    path = getattr(type(obj), "__nnsight_envoy_path__", None)
    if isinstance(path, str):
        return path
    mod = getattr(type(obj), "__module__", "") or ""
    if mod.startswith("nnsight."):
        d = getattr(obj, "__dict__", None)
        if isinstance(d, dict) and isinstance(d.get("path"), str) and "_module" in d:
            return d["path"]
    return None


def _is_atomic(obj: Any) -> bool:
    if type(obj) in _ATOMS:
        return True
    if type(obj) in (tuple, frozenset):
        return all(_is_atomic(x) for x in obj)
    return False


def _is_function_like(obj: Any) -> bool:
    if isinstance(obj, type):
        return False
    if isinstance(obj, _FUNCTION_TYPES):
        return True
    return callable(obj) and hasattr(type(obj), "__call__") and "__wrapped__" in getattr(obj, "__dict__", {})


class _Module:
    """A user module captured by value: its namespace and the globals the captured code needs."""

    def __init__(self, name: str, namespace: dict, index: int, module: Any):
        self.name = name
        self.namespace = namespace
        self.index = index
        self.module = module
        self.entries: Dict[str, Binding] = {}
        self.pending: Set[str] = set()

    @property
    def package(self) -> Optional[str]:
        pkg = self.namespace.get("__package__")
        if isinstance(pkg, str):
            return pkg
        return self.name if "__path__" in self.namespace else self.name.rpartition(".")[0]

    @property
    def filename(self) -> str:
        f = self.namespace.get("__file__")
        return f if isinstance(f, str) else "<module %s>" % self.name

    @property
    def lazy_annotations(self) -> bool:
        return _FUTURE_ANNOTATIONS is not None and self.namespace.get("annotations") is _FUTURE_ANNOTATIONS


class Closer(DefinitionCapture, ImportCapture):
    """One run of the closure pass (see the module docstring)."""

    def __init__(self, *, remote: bool = True, model_path: Callable[[Any], Optional[str]] = default_model_path,
                 tracer: Any = None, is_tracer: Optional[Callable[[Any], bool]] = None,
                 frame_module: Optional[str] = None, frame_globals: Optional[dict] = None):
        self.remote = remote
        self.model_path = model_path
        self.tracer = tracer
        self.is_tracer = is_tracer or (lambda obj: False)
        self.frame_module = frame_module
        self.frame_globals = frame_globals
        self.defs: List[Optional[Definition]] = []
        self.objects: List[Any] = []
        self.keys: Dict[Any, int] = {}
        self.modules: Dict[str, _Module] = {}
        self.diagnostics = []
        self._keep: List[Any] = []
        self._checked_chains: Set[Tuple[str, Chain, str, int]] = set()

    # -- results ---------------------------------------------------------------------

    def reject(self, code: str, where: Optional[Where], message: str, hint: str = "") -> CaptureRejected:
        d = diagnostic(code, where, message, hint)
        if d not in self.diagnostics:
            self.diagnostics.append(d)
        return CaptureRejected(d)

    def _reserve(self, key: Any, obj: Any) -> int:
        self.keys[key] = len(self.defs)
        self.defs.append(None)
        self.objects.append(obj)
        self._keep.append(obj)
        return len(self.defs) - 1

    def module_info(self, name: str, namespace: dict, module: Any = None) -> _Module:
        info = self.modules.get(name)
        if info is None:
            index = self._reserve(("module", name), module if module is not None else sys.modules.get(name))
            info = self.modules[name] = _Module(name, namespace, index, module)
        return info

    def finish(self, program: Program, bindings: Iterable[Binding]) -> Program:
        """The complete program (raises DiagnosticError if anything was rejected)."""
        for info in self.modules.values():
            order = {k: i for i, k in enumerate(info.namespace)}
            entries = sorted(info.entries.values(), key=lambda b: (order.get(b.name, -1), b.name))
            self.defs[info.index] = Definition(
                name=info.name, module=info.name,
                source="# module %s\n" % info.name,
                loc=SourceLoc(info.filename, 1, 0), globals=tuple(entries), kind=DEF_MODULE)
        if self.diagnostics:
            raise DiagnosticError(sorted(self.diagnostics, key=lambda d: (d.path, d.line, d.col)))
        from dataclasses import replace

        return replace(program, bindings=tuple(bindings), definitions=tuple(self.defs))

    # -- the dispatcher ------------------------------------------------------------------

    def capture(self, name: str, obj: Any, where: Where, *, found_as: Optional[_Module] = None,
                global_form: bool = False) -> Binding:
        """The binding of ``name`` (found as global ``name`` of ``found_as``, if given) to ``obj``."""
        kind, value = self._capture(name, obj, where, found_as, global_form)
        return Binding(name, kind, value)

    def _capture(self, name: str, obj: Any, where: Where, found_as: Optional[_Module],
                 global_form: bool) -> Tuple[str, Any]:
        if not _is_atomic(obj):
            path = self._model_path(obj, where)
            if path is not None:
                return BIND_MODEL, path
            if self.is_tracer(obj):
                if obj is self.tracer:
                    return BIND_TRACER, None
                raise self.reject("NN504", where, "'%s' is the tracer of another trace" % name,
                                  "use the tracer of this trace (its `as` name)")
            if isinstance(obj, types.ModuleType):
                return BIND_MODULE, self._module(obj, where)
            if isinstance(obj, type):
                return self._open_entry(self._class(obj, where, found_as, name), where)
            if _is_function_like(obj):
                return self._open_entry(self._callable(obj, where, found_as, name), where)
            if isinstance(obj, logging.Logger):
                return BIND_VALUE, ["objref", ["logger", obj.name]]
            ref = self._named_object(obj, name, where)
            if ref is not None:
                return self._open_entry((BIND_OBJECT, ref), where)
            if global_form and self.frame_module is not None and self.frame_globals is not None \
                    and self.frame_globals.get(name) is obj and _user_module(self.frame_module):
                info = self.module_info(self.frame_module, self.frame_globals, sys.modules.get(self.frame_module))
                self.entry(info, name, where)
                return BIND_OBJECT, "%s:%s" % (info.name, name)
        return BIND_VALUE, self.encode(obj, where)

    # -- data ------------------------------------------------------------------------------

    def encode(self, obj: Any, where: Where) -> Any:
        """The value tree of ``obj``; classes and functions in it are captured by the same rules."""
        try:
            return encode_value(obj, classref=lambda c: self._classref(c, where),
                                objref=lambda o: self._objref(o, where))
        except CaptureRejected:
            raise
        except UnencodableValueError as e:
            what = "'%s'" % where.name if where.name else "a value"
            raise self.reject("NN501", where, "cannot send %s to the server: %s" % (what, _strip_where(str(e))))

    def _classref(self, cls: type, where: Where) -> Any:
        kind, value = self._open_entry(self._class(cls, where, None, cls.__name__), where)
        return ["def", value] if kind == BIND_CLASS else value

    def _model_path(self, obj: Any, where: Where) -> Optional[str]:
        try:
            return self.model_path(obj)
        except ValueError as e:
            raise self.reject("NN504", where, str(e))

    def _objref(self, obj: Any, where: Where) -> Any:
        path = self._model_path(obj, where)
        if path is not None:
            return ["model", path]
        if self.is_tracer(obj):
            if obj is self.tracer:
                return ["tracer"]
            raise self.reject("NN504", where, "%s holds the tracer of another trace" % _what(where),
                              "use the tracer of this trace (its `as` name)")
        if isinstance(obj, types.ModuleType):
            return ["module", self._module(obj, where.at("", where.pos))]
        if _is_function_like(obj):
            kind, value = self._open_entry(
                self._callable(obj, where, None, getattr(obj, "__name__", "")), where)
            if kind == BIND_FUNCTION:
                return ["def", value]
            if kind == BIND_BUILTIN:
                return "builtins:" + value
            return value
        if isinstance(obj, logging.Logger):
            return ["logger", obj.name]
        ref = self._named_object(obj, "", where)
        return ref if ref is None else self._open_entry((BIND_OBJECT, ref), where)[1]

    def _open_entry(self, binding: Tuple[str, Any], where: Where) -> Tuple[str, Any]:
        """Refuse a server reference the access table refuses (``contextlib:redirect_stdout``,
        ``types:FunctionType``): the server's loader resolves ``"module:qual"`` through the same
        table, so it is reported here, at the user's line, before anything is sent."""
        kind, ref = binding
        if self.remote and kind == BIND_OBJECT and isinstance(ref, str) and ":" in ref and \
                not ref.startswith("builtins:"):  # builtins: the builtins table (NN301)
            dotted = ref.replace(":", ".")
            if policy.classify_module(ref.split(":", 1)[0]) == policy.SERVER:
                reason = access.entry_refusal(dotted)
                if reason is not None:
                    raise self.reject("NN401", where, "'%s' is not available on the server: %s" % (dotted, reason))
        return binding

    # -- modules -------------------------------------------------------------------------------

    def _module(self, mod: types.ModuleType, where: Where) -> str:
        name = mod.__name__
        kind = policy.classify_module_object(mod)
        if kind == policy.SERVER:
            self._check_chains(name, where)
            return name
        self._refuse_module(name, kind, where)
        if kind != policy.USER:
            return name  # local target: not restricted
        info = self.module_info(name, mod.__dict__, mod)
        self._module_uses(info, where)
        return name

    def _refuse_module(self, name: str, kind: str, where: Where, what: str = "") -> None:
        if not self.remote:
            return
        what = what or ("'%s' refers to module '%s', which" % (where.name, name) if where.name and where.name != name
                        else "module '%s'" % name)
        if kind == policy.DANGEROUS:
            raise self.reject("NN201", where, "%s is not available on the server: %s" % (
                what, policy.module_reason(name)))
        if kind == policy.INSTALLED:
            raise self.reject("NN202", where, "%s is installed here but not provided by the server" % what,
                              HINTS["NN202"] % name.split(".")[0])

    def _check_chains(self, module: str, where: Where) -> None:
        """Refuse ``torch.hub``-style accesses to dangerous parts of an allowed module."""
        if not self.remote or where.facts is None or not where.name:
            return
        for chain in sorted(where.chains or ()):
            for i in range(1, len(chain) + 1):
                dotted = module + "." + ".".join(chain[:i])
                key = (dotted, chain, where.loc.file, where.loc.line)
                if key in self._checked_chains:
                    break
                pos = where.facts.chain_positions.get((where.name, chain))
                at = where.at(where.name, pos)
                if module == "builtins" and i == 1 and policy.is_dangerous_builtin(chain[0]):
                    self._checked_chains.add(key)
                    self.reject("NN301", at, "builtin '%s' is not available on the server: %s" % (
                        chain[0], policy.DANGEROUS_BUILTINS[chain[0]]))
                    break
                reason = access.entry_refusal(dotted)  # a refused module, or a refused entry (torch.save)
                if reason is not None and access.entry_refusal(dotted.rpartition(".")[0]) is None:
                    self._checked_chains.add(key)
                    self.reject("NN401", at, "'%s' is not available on the server: %s" % (dotted, reason))
                    break

    def _module_uses(self, info: _Module, where: Where) -> None:
        """Capture the attributes of user module ``info`` that ``where`` reads."""
        chains = where.chains
        if chains is None or where.bare or not chains:
            for attr, value in list(info.namespace.items()):
                if attr.startswith("_"):
                    continue
                if (isinstance(value, type) or isinstance(value, types.FunctionType)) and \
                        getattr(value, "__module__", None) == info.name:
                    self.entry(info, attr, where.at(where.name))
        for chain in sorted(chains or ()):
            self._module_attr(info, chain, where)

    def _module_attr(self, info: _Module, chain: Chain, where: Where) -> None:
        first = chain[0]
        value = info.namespace.get(first, _MISSING)
        if value is _MISSING:
            value = sys.modules.get(info.name + "." + first, _MISSING)
            if value is _MISSING:
                return  # fails on the server exactly as it would here
        pos = where.facts.chain_positions.get((where.name, chain)) if where.facts is not None else None
        sub = Where(where.loc, where.source, first, pos or where.pos, None, where.context)
        if isinstance(value, types.ModuleType) and policy.classify_module_object(value) == policy.USER:
            sub_info = self.module_info(value.__name__, value.__dict__, value)
            if first not in info.entries:
                info.entries[first] = Binding(first, BIND_MODULE, value.__name__)
            rest = chain[1:]
            for c in ([rest] if rest else []):
                self._module_attr(sub_info, c, sub)
            if not rest:
                self._module_uses(sub_info, sub)
            return
        if first in info.namespace:
            self.entry(info, first, sub)
        else:
            info.entries.setdefault(first, self.capture(first, value, sub))

    def entry(self, info: _Module, name: str, where: Where) -> None:
        """Make global ``name`` of user module ``info`` part of its DEF_MODULE (captured once)."""
        if name in info.entries or name in info.pending:
            value = info.namespace.get(name)
            if isinstance(value, types.ModuleType):  # a later reader may use more attributes
                try:
                    self._module(value, where)
                except CaptureRejected:
                    pass
            return
        info.pending.add(name)
        try:
            binding = self.capture(name, info.namespace[name], where, found_as=info)
        except CaptureRejected:
            binding = Binding(name, BIND_RUNTIME)
        finally:
            info.pending.discard(name)
        info.entries[name] = binding

    # -- classes -----------------------------------------------------------------------------------

    def _class(self, cls: type, where: Where, found_as: Optional[_Module], name: str) -> Tuple[str, Any]:
        mod_name = getattr(cls, "__module__", None) or ""
        qual = getattr(cls, "__qualname__", None) or cls.__name__
        module = sys.modules.get(mod_name)
        kind = policy.classify_module_object(module) if module is not None else policy.classify_module(mod_name)
        if kind != policy.USER:
            ref = server_ref(cls, (name,)) if kind != policy.SERVER else None  # _struct.Struct
            if ref is not None:
                return BIND_OBJECT, ref
            self._refuse_module(mod_name, kind, where, "class '%s' comes from module '%s', which" % (qual, mod_name))
            ref = self._verified_ref(cls, mod_name, qual, name, found_as)
            if ref is None:
                ref = server_ref(cls, (name,))  # types.FunctionType: builtins.function, named by types
            if ref is None:
                raise self.reject("NN503", where, "class %s.%s cannot be referenced by name" % (mod_name, qual),
                                  "use a class importable from its module")
            return BIND_OBJECT, ref
        if "<locals>" in qual:
            raise self.reject("NN503", where, "class '%s' is defined inside a function: it cannot be sent" % qual,
                              "define the class at module level")
        if module is None:
            raise self.reject("NN502", where, "class '%s' comes from module '%s', which is not loaded" % (
                qual, mod_name))
        info = self.module_info(mod_name, module.__dict__, module)
        if "." in qual:
            owner = qual.split(".", 1)[0]
            if lookup_qualname(module, qual) is not cls or owner not in info.namespace:
                raise self.reject("NN503", where, "class '%s' cannot be found as %s.%s" % (qual, mod_name, qual))
            self.entry(info, owner, where)
            return BIND_OBJECT, "%s:%s" % (mod_name, qual)
        index = self._statement(info, qual, cls, where)
        if index is None:
            raise self.reject("NN502", where, "cannot find the source of class '%s' (module %s)" % (qual, mod_name))
        return BIND_CLASS, index

    def _verified_ref(self, obj: Any, mod_name: str, qual: str, name: str,
                      found_as: Optional[_Module]) -> Optional[str]:
        module = sys.modules.get(mod_name)
        if module is not None and lookup_qualname(module, qual) is obj:
            return "%s:%s" % (mod_name, qual)
        return self._search_ref(obj, [name, getattr(obj, "__name__", None)], [mod_name])

    def _search_ref(self, obj: Any, names: List[Any], modules: List[Any]) -> Optional[str]:
        for m in modules:
            module = sys.modules.get(m) if isinstance(m, str) else None
            if module is None:
                continue
            for n in names:
                if isinstance(n, str) and n and lookup_qualname(module, n) is obj:
                    return "%s:%s" % (m, n)
        return None

    def _named_object(self, obj: Any, name: str, where: Where) -> Optional[str]:
        """``"module:name"`` for a non-data object of a non-user module (``typing.List``...)."""
        names = [name, getattr(obj, "__name__", None), getattr(obj, "_name", None)]
        if not any(isinstance(n, str) and n for n in names[1:]):
            return None
        mods = [getattr(obj, "__module__", None), getattr(type(obj), "__module__", None)]
        ref = self._search_ref(obj, names, mods)
        if ref is None:
            return None
        mod_name = ref.split(":", 1)[0]
        kind = policy.classify_module(mod_name)
        if kind == policy.USER:
            return None
        self._refuse_module(mod_name, kind, where, "%s comes from module '%s', which" % (_what(where), mod_name))
        return ref

    # -- functions ---------------------------------------------------------------------------------

    def _callable(self, fn: Any, where: Where, found_as: Optional[_Module], name: str) -> Tuple[str, Any]:
        bname = getattr(fn, "__name__", None)
        if isinstance(bname, str) and getattr(builtins, bname, _MISSING) is fn:
            if self.remote and policy.is_dangerous_builtin(bname):
                raise self.reject("NN301", where, "builtin '%s' is not available on the server: %s" % (
                    bname, policy.DANGEROUS_BUILTINS[bname]))
            if name == bname and found_as is None:
                return BIND_BUILTIN, bname
            return BIND_OBJECT, "builtins:" + bname
        if isinstance(fn, types.MethodType):
            owner = fn.__self__
            if isinstance(owner, type):
                kind, value = self._class(owner, where, None, owner.__name__)
                if kind == BIND_OBJECT:
                    return BIND_OBJECT, "%s.%s" % (value, fn.__name__)
                return BIND_VALUE, ["objref", ["def", value, fn.__name__]]
            ref = server_ref(fn, (name,))  # random.randint: a method of the module's hidden instance
            if ref is not None:
                return BIND_OBJECT, ref
            raise self.reject("NN503", where, "%s is a method bound to a %s object: it cannot be sent" % (
                _what(where), type(owner).__name__), "send the object and call its method inside the trace")
        self_ = getattr(fn, "__self__", None)
        mod_name = getattr(fn, "__module__", None)
        if not isinstance(mod_name, str):
            mod_name = self_.__name__ if isinstance(self_, types.ModuleType) else ""
        if isinstance(fn, types.FunctionType) and not mod_name:
            mod_name = fn.__globals__.get("__name__", "")
        module = sys.modules.get(mod_name)
        kind = policy.classify_module_object(module) if module is not None else policy.classify_module(mod_name)
        qual = getattr(fn, "__qualname__", None) or bname or ""
        if found_as is None and kind == policy.USER and module is not None and name and \
                getattr(module, name, None) is fn:
            found_as = self.module_info(mod_name, module.__dict__, module)
        if found_as is not None and self._is_statement(found_as, name, fn):
            index = self._statement(found_as, name, fn, where)
            if index is not None:
                return BIND_FUNCTION, index
        if kind != policy.USER:
            ref = server_ref(fn, (name,)) if kind != policy.SERVER else None  # _functools.reduce
            if ref is not None:
                return BIND_OBJECT, ref
            self._refuse_module(mod_name, kind, where, "function '%s' comes from module '%s', which" % (
                qual, mod_name))
            ref = self._verified_ref(fn, mod_name, qual, name, found_as)
            if ref is None and isinstance(self_, types.ModuleType):
                ref = self._search_ref(fn, [bname, name], [self_.__name__])
            if ref is None:
                ref = server_ref(fn, (name,))
            if ref is None:
                raise self.reject("NN503", where, "%s (%s) cannot be referenced by name on the server" % (
                    _what(where), short_repr(fn)), "use a function importable from its module")
            return BIND_OBJECT, ref
        if isinstance(fn, types.FunctionType):
            ns = fn.__globals__
            home = ns.get("__name__", mod_name) if isinstance(ns.get("__name__"), str) else mod_name
            info = self.module_info(home, ns, sys.modules.get(home))
            if "<locals>" not in qual and "." not in qual and ns.get(qual) is fn:
                index = self._statement(info, qual, fn, where)
                if index is not None:
                    return BIND_FUNCTION, index
            if "<locals>" not in qual and "." in qual and lookup_qualname(sys.modules.get(home), qual) is fn:
                owner = qual.split(".", 1)[0]
                if owner in info.namespace:
                    self.entry(info, owner, where)
                    return BIND_OBJECT, "%s:%s" % (home, qual)
            return BIND_FUNCTION, self._local(fn, info, where)
        ref = server_ref(fn, (name,))  # random.random: a builtin method of the module's hidden instance
        if ref is not None:
            return BIND_OBJECT, ref
        raise self.reject("NN503", where, "%s (%s) cannot be sent: it is neither a function with Python "
                          "source nor a module-level definition" % (_what(where), short_repr(fn)),
                          "use a plain function defined at module level")

def _user_module(name: str) -> bool:
    module = sys.modules.get(name)
    return policy.classify_module_object(module) == policy.USER if module is not None else False


def _what(where: Where) -> str:
    return "'%s'" % where.name if where.name else "a value"


def _strip_where(message: str) -> str:
    """A value error without object addresses (the diagnostic already says where)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", message)
