"""Server side of a remote request: load a closed Program into live objects, safely.

:class:`Loader` turns a program's bindings into a namespace for its units:

* BIND_MODEL paths resolve against the model the server hosts, BIND_TRACER to
  the server's tracer;
* BIND_MODULE / BIND_OBJECT import server modules -- refusing anything the
  policy (:mod:`compiler.policy`) and the per-module table
  (:mod:`compiler.access`) refuse -- or name a module the program carries by
  value. A server module is handed out as a read-only
  :class:`~runtime.loader.views.ModuleView`, never as the module itself;
* Definitions are executed from source in fresh module namespaces, one per
  user module (DEF_MODULE globals installed in module order, DEF_STATEMENT
  code run in place, DEF_LOCAL functions rebuilt in their own scope with their
  closure cells and defaults filled in). Code keeps its original file name and
  line numbers, so tracebacks point at the user's library;
* values are decoded from their trees; references to user classes resolve to
  the classes rebuilt here.

All code of the request -- definitions here, units through :meth:`Loader.compile`
-- is built in its guarded form (:mod:`runtime.loader.rewrite`) and runs with
the request's builtins (:mod:`runtime.loader.builtins_table`) and guard
(:mod:`runtime.loader.guard`): the loader is a capability boundary, not a name
filter. docs/security.md describes what each guard guarantees.
"""
import ast
import builtins
import contextlib
import dis
import importlib
import logging
import sys
import types
from typing import Any, Dict, Iterator, List, Optional

from compiler import access, policy
from compiler import pyast
from compiler.ir.nodes import (
    BIND_BUILTIN,
    BIND_CLASS,
    BIND_FUNCTION,
    BIND_MODEL,
    BIND_MODULE,
    BIND_OBJECT,
    BIND_RUNTIME,
    BIND_TRACER,
    BIND_VALUE,
    DEF_LOCAL,
    DEF_MODULE,
    DEF_STATEMENT,
    Binding,
    Definition,
    Program,
)
from compiler.ir.errors import IRDecodeError
from compiler.ir.values import decode_value, default_classref
from compiler.public_homes import server_ref

from .blocking import is_user_module
from .builtins_table import make_builtins
from .errors import LoadError, ServerImportError, refused_entry
from .guard import Guard
from .hosted_memory import HostedMemory
from .rewrite import guard_tree
from .sources import _shift, _StripSignature
from .views import ModuleView, module_name, module_of

_UNBOUND = object()
_BUILDING = "building"
_DONE = "done"
_SCOPE = "__nnsight_scope__"


def _definition_refs(tree: Any) -> set:
    """Indices of the definitions a value tree refers to (``["def", i, ...]`` references)."""
    found = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if type(node) is list and node:
            if node[0] == "def" and len(node) >= 2 and type(node[1]) is int:
                found.add(node[1])
            else:
                stack.extend(item for item in node if type(item) is list)
    return found


def _shell(tree: Any) -> Any:
    """An empty container of the tree's top-level type (dict, list, set), else None."""
    while type(tree) is list and tree and tree[0] == "shared" and len(tree) == 3:
        tree = tree[2]
    tag = tree[0] if type(tree) is list and tree else None
    return {"dict": {}, "list": [], "set": set()}.get(tag)


def _refill(shell: Any, value: Any) -> bool:
    if type(shell) is not type(value):
        return False
    if isinstance(shell, list):
        shell[:] = value
    else:
        shell.clear()
        shell.update(value)
    return True


def _torch_modes() -> Optional[tuple]:
    """The thread's autograd switches, which a request may flip and not flip back
    (``torch.set_grad_enabled(True)`` as a call, ``detect_anomaly().__enter__()``)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    return torch.is_grad_enabled(), torch.is_anomaly_enabled(), torch.is_anomaly_check_nan_enabled()


def _restore_torch_modes(modes: Optional[tuple]) -> None:
    """Put them back after the request: the next request on this thread starts as this one did."""
    torch = sys.modules.get("torch")
    if modes is None or torch is None:
        return
    torch.set_grad_enabled(modes[0])
    torch.set_anomaly_enabled(modes[1], modes[2])


def _server_name(name: Any) -> bool:
    """A module name a request cannot use for its own code: the server's (or the policy's)."""
    if not isinstance(name, str):
        return True
    if policy._policy_kind(name) is not None or name in sys.builtin_module_names:
        return True
    existing = sys.modules.get(name)
    return existing is not None and name not in ("__main__", "__mp_main__") and \
        not is_user_module(name, existing)


class Loader:
    """Builds the objects of one program (see the module docstring)."""

    def __init__(self, program: Program, *, model: Any = None, tracer: Any = None):
        self.program = program
        self.defs = program.definitions
        self.model = model
        self.tracer = tracer
        self.module_defs: Dict[str, int] = {}
        for i, d in enumerate(self.defs):
            if _server_name(d.module):  # by-value modules are installed in sys.modules while it runs
                raise LoadError("the program carries module %r by value, but that name belongs to the "
                                "server" % d.module)
            if d.kind == DEF_MODULE:
                self.module_defs[d.module] = i
        self.modules: Dict[str, types.ModuleType] = {}
        self.mstate: Dict[str, str] = {}
        self.state: List[Optional[str]] = [None] * len(self.defs)
        self.objs: List[Any] = [None] * len(self.defs)
        self.ids: Dict[int, int] = {}
        self.guard: Guard = None  # type: ignore[assignment]  (set by make_builtins just below)
        self.builtins = make_builtins(self._import, self._new_guard)
        self._installing: Optional[Dict[str, Any]] = None

    def _new_guard(self, table: Dict[str, Any]) -> Guard:
        self.guard = Guard(table)
        self.guard.modules = self.modules
        if self.model is not None:
            self.guard.hosted = HostedMemory(self.model)
        return self.guard

    def compile(self, program: Optional[Program] = None) -> Any:
        """The program's units built in their guarded form (a :class:`runtime.builder.CompiledProgram`)."""
        from runtime.builder import CompiledProgram

        from .compiled_cache import guarded_build

        return guarded_build(program if program is not None else self.program,
                             lambda p: CompiledProgram(p, rewrite=guard_tree))

    # -- sys.modules while a request runs ------------------------------------------------------

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Make the program's by-value modules visible in ``sys.modules`` (dataclasses, pickle,
        typing and ``import`` statements look there) for the ``with`` body."""
        previous = self._installing
        self._installing = {}
        for name, module in self.modules.items():
            self._install(name, module)
        modes = _torch_modes()
        try:
            yield
        finally:
            _restore_torch_modes(modes)
            for name, old in self._installing.items():
                if sys.modules.get(name) is self.modules.get(name):
                    if old is _UNBOUND:
                        del sys.modules[name]
                    else:
                        sys.modules[name] = old
            self._installing = previous

    def _install(self, name: str, module: types.ModuleType) -> None:
        if self._installing is not None and name not in self._installing:
            self._installing[name] = sys.modules.get(name, _UNBOUND)
            sys.modules[name] = module

    # -- namespaces -------------------------------------------------------------------------------

    def namespace(self, name: str = "__main__") -> Dict[str, Any]:
        """Globals for the program's units: every resolved binding."""
        ns: Dict[str, Any] = {"__builtins__": self.builtins, "__name__": name}
        for b in self.program.bindings:
            value = self.resolve(b)
            if value is not _UNBOUND:
                ns[b.name] = value
        return ns

    def _by_value(self, name: str) -> bool:
        if name in self.module_defs or name in self.modules:
            return True
        prefix = name + "."
        return any(m.startswith(prefix) for m in self.module_defs)

    def _module_object(self, name: str) -> types.ModuleType:
        module = self.modules.get(name)
        if module is None:
            module = types.ModuleType(name)
            ns = module.__dict__
            ns["__builtins__"] = self.builtins
            ns["__package__"] = name if any(m.startswith(name + ".") for m in self.module_defs) \
                else name.rpartition(".")[0]
            self.modules[name] = module
            self._install(name, module)
            parent, _, child = name.rpartition(".")
            if parent and self._by_value(parent):
                setattr(self._module_object(parent), child, module)
        return module

    def module(self, name: str) -> types.ModuleType:
        """By-value module ``name``, its captured globals installed in module order."""
        module = self._module_object(name)
        index = self.module_defs.get(name)
        if index is not None and self.mstate.get(name) is None:
            self.mstate[name] = _BUILDING
            self.state[index] = _BUILDING
            entries = self.defs[index].globals
            place = {g.value: i for i, g in enumerate(entries)
                     if g.kind in (BIND_FUNCTION, BIND_CLASS) and self._in_module(g.value, name)}
            deferred = []
            for i, g in enumerate(entries):
                if g.kind == BIND_VALUE and any(place.get(d, -1) > i for d in _definition_refs(g.value)):
                    # data made before the code that fills it (a registry filled by decorators):
                    # an empty container now, the captured contents once that code has run
                    shell = _shell(g.value)
                    if shell is not None:
                        module.__dict__[g.name] = shell
                    deferred.append((g, shell))
                    continue
                self._entry(name, g)
            for g, shell in deferred:
                value = self.resolve(g)
                if shell is None or not _refill(shell, value):
                    module.__dict__[g.name] = value
            self.mstate[name] = _DONE
            self.state[index] = _DONE
            self.objs[index] = module
        return module

    def _entry(self, module: str, g: Binding) -> None:
        ns = self.modules[module].__dict__
        if g.kind in (BIND_FUNCTION, BIND_CLASS) and self._in_module(g.value, module):
            obj = self.definition(g.value)  # runs the statement in place
            if ns.get(g.name) is not obj:
                ns[g.name] = obj
            return
        value = self.resolve(g)
        if value is not _UNBOUND:
            ns[g.name] = value

    def _in_module(self, index: Any, module: str) -> bool:
        if not isinstance(index, int) or not 0 <= index < len(self.defs):
            raise LoadError("definition index %r out of range" % (index,))
        d = self.defs[index]
        return d.kind == DEF_STATEMENT and d.module == module

    # -- definitions ----------------------------------------------------------------------------------

    def definition(self, index: int) -> Any:
        if not isinstance(index, int) or not 0 <= index < len(self.defs):
            raise LoadError("definition index %r out of range" % (index,))
        if self.state[index] == _DONE:
            return self.objs[index]
        d = self.defs[index]
        if d.kind == DEF_MODULE:
            return self.module(d.module)
        if self.state[index] == _BUILDING:
            if self.objs[index] is not None:
                return self.objs[index]  # a function whose cells refer back to it
            raise LoadError("definition %d (%s) refers to itself while it is being created" % (index, d.name))
        if d.kind == DEF_STATEMENT and d.module in self.module_defs and self.mstate.get(d.module) is None:
            self.module(d.module)  # runs this statement at its place in module order
            if self.state[index] == _DONE:
                return self.objs[index]
        self.state[index] = _BUILDING
        module = self.module(d.module) if d.kind == DEF_LOCAL else self._module_object(d.module)
        ns = module.__dict__
        for g in d.globals:
            value = self.resolve(g)
            if value is not _UNBOUND:
                ns[g.name] = value
        if d.kind == DEF_STATEMENT:
            obj = self._run_statement(d, ns)
        elif d.kind == DEF_LOCAL:
            obj = self._build_local(d, index, ns)
        else:
            raise LoadError("definition %d has unknown kind %r" % (index, d.kind))
        self.objs[index] = obj
        self.ids[id(obj)] = index
        self.state[index] = _DONE
        return obj

    def _parse(self, d: Definition, mode: str = "exec") -> ast.AST:
        try:
            return pyast.parse(d.source, d.loc.file, mode)
        except SyntaxError as e:
            raise LoadError("definition %r (%s:%d) does not parse on this server: %s" % (
                d.name, d.loc.file, d.loc.line, e)) from e

    def _run_statement(self, d: Definition, ns: Dict[str, Any]) -> Any:
        tree = guard_tree(_shift(self._parse(d), d.loc), d.loc.file)
        code = pyast.compile_tree(tree, d.loc.file, "exec")
        exec(code, ns)
        if d.name not in ns:
            raise LoadError("definition %r did not define %r" % (d.name, d.name))
        return ns[d.name]

    def _build_local(self, d: Definition, index: int, ns: Dict[str, Any]) -> Any:
        stripped = d.source.rstrip("\n")
        lam = stripped.startswith("lambda")
        if lam:
            try:
                expr = pyast.parse("(" + stripped + ")", d.loc.file, "eval").body
            except SyntaxError as e:
                raise LoadError("definition %r does not parse on this server: %s" % (d.name, e)) from e
            for node in ast.walk(expr):  # undo the parenthesis on line 1
                if getattr(node, "lineno", None) == 1 and hasattr(node, "col_offset"):
                    node.col_offset = max(node.col_offset - 1, 0)
                    if getattr(node, "end_lineno", None) == 1:
                        node.end_col_offset = max(node.end_col_offset - 1, 0)
            target = expr
        else:
            tree = self._parse(d)
            if len(tree.body) != 1 or not isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
                raise LoadError("local definition %r must be one def statement or a lambda" % d.name)
            target = tree.body[0]
            target.decorator_list = []
        _StripSignature(target).visit(target)
        _shift(target, d.loc, all_lines=not lam)
        target = guard_tree(target, d.loc.file)  # before the scope wrapper, whose name is reserved
        cells = [c.name for c in d.cells]
        body: List[ast.stmt] = []
        if cells:
            assign = ast.Assign(targets=[ast.Name(id=n, ctx=ast.Store()) for n in cells],
                                value=ast.Constant(value=None))
            body.append(ast.If(test=ast.Constant(value=False), body=[assign], orelse=[]))
        if lam:
            body.append(ast.Return(value=target))
        else:
            body += [target, ast.Return(value=ast.Name(id=target.name, ctx=ast.Load()))]
        extra = {"type_params": []} if sys.version_info >= (3, 12) else {}
        scope = ast.FunctionDef(name=_SCOPE, args=ast.arguments(posonlyargs=[], args=[], vararg=None, kwonlyargs=[],
                                                                 kw_defaults=[], kwarg=None, defaults=[]),
                                body=body, decorator_list=[], returns=None, type_comment=None, **extra)
        module = ast.Module(body=[scope], type_ignores=[])
        for node in ast.walk(module):
            if not hasattr(node, "lineno") or node.lineno is None:
                for attr, value in (("lineno", d.loc.line), ("col_offset", 0),
                                    ("end_lineno", d.loc.line), ("end_col_offset", 0)):
                    setattr(node, attr, value)
        ast.fix_missing_locations(module)
        code = pyast.compile_tree(module, d.loc.file, "exec")
        scope_code = next(c for c in code.co_consts if isinstance(c, types.CodeType) and c.co_name == _SCOPE)
        fn = types.FunctionType(scope_code, ns)()
        fn.__qualname__ = d.name
        self.objs[index] = fn  # cells may refer back to this function
        closure = dict(zip(fn.__code__.co_freevars, fn.__closure__ or ()))
        for c in d.cells:
            value = self.resolve(c)
            if c.name in closure and value is not _UNBOUND:
                closure[c.name].cell_contents = value
        for a in d.attrs:
            value = self.resolve(a)
            if value is _UNBOUND:
                continue
            if a.name == "__defaults__":
                fn.__defaults__ = tuple(value)
            elif a.name == "__kwdefaults__":
                fn.__kwdefaults__ = dict(value)
            else:
                setattr(fn, a.name, value)
        return fn

    # -- bindings and references -----------------------------------------------------------------

    def resolve(self, b: Binding) -> Any:
        """The live object of a binding (``_UNBOUND`` for BIND_RUNTIME)."""
        kind, value = b.kind, b.value
        if kind == BIND_RUNTIME:
            return _UNBOUND
        if kind == BIND_MODEL:
            return self.envoy(value)
        if kind == BIND_TRACER:
            if self.tracer is None:
                raise LoadError("binding %r needs the tracer, but none is running" % b.name)
            return self.tracer
        if kind == BIND_MODULE:
            return self.import_module(value)
        if kind == BIND_OBJECT:
            return self.object(value)
        if kind == BIND_VALUE:
            try:
                return self.decode(value)
            except IRDecodeError as e:  # say which binding (the user's name), not where the decoder is
                e.args = ("binding %r: %s" % (b.name, e.args[0] if e.args else e),) + e.args[1:]
                raise
        if kind in (BIND_FUNCTION, BIND_CLASS):
            return self.definition(value)
        if kind == BIND_BUILTIN:
            if not isinstance(value, str) or value not in self.builtins:
                raise LoadError("unknown builtin %r" % (value,))
            return self.builtins[value]
        raise LoadError("binding %r has unknown kind %r" % (b.name, kind))

    def decode(self, tree: Any) -> Any:
        return decode_value(tree, resolve=self.resolve_ref, may_build=self.defined_here)

    def defined_here(self, cls: type) -> bool:
        """Was ``cls`` defined by this request's by-value code? (value trees may rebuild only those)"""
        if id(cls) in self.ids and self.objs[self.ids[id(cls)]] is cls:
            return True
        module = self.modules.get(getattr(cls, "__module__", None))  # type: ignore[arg-type]
        qual = getattr(cls, "__qualname__", "")
        if module is None or not isinstance(qual, str) or "<" in qual:
            return False
        obj: Any = module
        for part in qual.split("."):
            obj = getattr(obj, "__dict__", {}).get(part)
        return obj is cls

    def resolve_ref(self, ref: Any) -> Any:
        """The ``resolve`` hook of value trees on the server."""
        if isinstance(ref, str):
            return self.object(ref)
        if isinstance(ref, list) and ref:
            tag = ref[0]
            if tag == "def" and len(ref) >= 2:
                obj = self.definition(ref[1])
                for part in ref[2:]:
                    obj = self.guard.get(obj, part)
                return obj
            if tag == "module" and len(ref) == 2:
                return self.import_module(ref[1])
            if tag == "model" and len(ref) == 2:
                return self.envoy(ref[1])
            if tag == "tracer":
                return self.resolve(Binding("tracer", BIND_TRACER))
            if tag == "logger" and len(ref) == 2 and isinstance(ref[1], str):
                return logging.getLogger(ref[1])  # a Logger's shared parts are refused by the guard
        raise LoadError("unknown reference %r in a value" % (ref,))

    def object(self, ref: Any) -> Any:
        """``"module:qualname"``: an attribute of a server module or of a by-value module,
        read through the guard like the same access in user code."""
        if not isinstance(ref, str) or ref.count(":") != 1:
            raise LoadError("bad object reference %r" % (ref,))
        mod, qual = ref.split(":")
        if mod == "builtins" and qual in self.builtins:
            return self.builtins[qual]
        obj: Any = self.import_module(mod)
        for part in qual.split("."):
            try:
                obj = self.guard.get(obj, part)
            except AttributeError:
                raise LoadError("%s has no attribute %r (needed for %r)" % (mod, part, ref)) from None
        return obj

    def import_module(self, name: str) -> Any:
        """A by-value module, or a read-only view of a server module the policy allows."""
        if not isinstance(name, str) or not name:
            raise LoadError("bad module name %r" % (name,))
        if self._by_value(name):
            return self.module(name)
        return self._server_module(name)

    def _server_module(self, name: str) -> ModuleView:
        reason = self.guard.path_refusal(name)
        if reason is None and policy.classify_module(name) != policy.SERVER:
            reason = policy.module_reason(name)
        if reason is not None:
            raise refused_entry(name, reason)
        return self.guard.module_value(importlib.import_module(name))

    def _import(self, name, globals=None, locals=None, fromlist=(), level=0):
        """``__import__`` of user code on the server."""
        if _native_import(sys._getframe(1), name, level):
            return builtins.__import__(name, globals, locals, fromlist, level)
        absname = name
        if level:
            package = (globals or {}).get("__package__")
            if package is None:
                here = (globals or {}).get("__name__", "")
                package = here if "__path__" in (globals or {}) else here.rpartition(".")[0]
            parts = (package or "").split(".")
            if not package or level - 1 >= len(parts):
                raise ImportError("attempted relative import beyond the top-level package")
            absname = ".".join(parts[: len(parts) - (level - 1)] + ([name] if name else []))
        if self._by_value(absname):
            target = self.import_module(absname)
            if fromlist:
                for item in fromlist:
                    sub = absname + "." + item
                    if item != "*" and self._by_value(sub) and not hasattr(target, item):
                        setattr(target, item, self.import_module(sub))
                return target
            top = absname.split(".")[0]
            return self.import_module(top) if self._by_value(top) else target
        target = self._server_module(absname)  # refuses what the policy and the module table refuse
        for item in fromlist or ():
            if item == "*":
                raise ServerImportError("'from %s import *' is not available on the server: import the "
                                        "names you use" % absname, name=absname)
            sub = absname + "." + item
            if access.attribute_class(item) == access.PUBLIC and self.guard.path_refusal(sub) is None \
                    and sub not in sys.modules and policy.classify_module(sub) == policy.SERVER:
                try:
                    importlib.import_module(sub)  # a submodule: `from torch import nn` reads the view after
                except ImportError:
                    pass
        if fromlist:
            return target
        return self._server_module(absname.split(".")[0])

    def envoy(self, path: Any) -> Any:
        """The hosted model's envoy at ``path`` (``"model.transformer.h.0"``)."""
        model = self.model
        if model is None:
            raise LoadError("the program uses the model (%r) but the server hosts none for it" % (path,))
        root = getattr(model, "path", "model")
        if not isinstance(path, str) or not (path == root or path.startswith(root + ".")):
            raise LoadError("envoy path %r is not in the hosted model (root %r)" % (path, root))
        obj = model
        for part in path[len(root) + 1:].split(".") if path != root else ():
            children = getattr(obj, "__dict__", {}).get("_children", {})
            if part in children:
                obj = children[part]
            elif access.attribute_class(part) == access.PUBLIC:
                obj = self.guard.get(obj, part)
            else:  # the hosted model's internals (model._module) are not the request's
                raise LoadError("envoy path %r names %r, which is not a submodule of the hosted model" % (
                    path, part))
        return obj

    # -- sending results back -------------------------------------------------------------------------

    def classref(self, cls: type) -> Any:
        """``classref`` hook for values the server sends back."""
        index = self.ids.get(id(cls))
        if index is not None:
            return ["def", index]
        if getattr(cls, "__module__", None) in self.modules:
            raise ValueError("class %s was created on the server and cannot be sent back" % cls.__qualname__)
        return default_classref(cls)

    def objref(self, obj: Any) -> Any:
        """``objref`` hook for values the server sends back."""
        index = self.ids.get(id(obj))
        if index is not None:
            return ["def", index]
        if self.model is not None and getattr(obj, "__dict__", {}).get("_interleaver", None) is \
                getattr(self.model, "__dict__", {}).get("_interleaver", _UNBOUND):
            return ["model", obj.path]
        if obj is self.tracer and obj is not None:
            return ["tracer"]
        if isinstance(obj, ModuleView):
            return ["module", module_name(module_of(obj))]
        if isinstance(obj, types.ModuleType):
            return ["module", obj.__name__]
        if isinstance(obj, logging.Logger):
            return ["logger", obj.name]
        if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
            mod, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
            if mod in self.modules:
                raise ValueError("function %s was created on the server and cannot be sent back" % qual)
            if isinstance(mod, str) and isinstance(qual, str) and "<" not in qual \
                    and policy.classify_module(mod) == policy.SERVER:
                module = sys.modules.get(mod)
                target: Any = module
                for part in qual.split("."):
                    target = getattr(target, part, None)
                if target is obj:
                    return "%s:%s" % (mod, qual)
            return server_ref(obj)  # random.random, _functools.reduce: by their public module
        return None


_IMPORT_NAME = dis.opmap["IMPORT_NAME"]


def _native_import(caller: types.FrameType, name: Any, level: int) -> bool:
    """Is this a server module's own C code importing an already loaded module of its package?

    C code imports through the running frame's ``__import__`` (``ndarray.sum()`` fetches
    ``numpy._core._methods`` that way), so such an import arrives here from the request's frame
    while that frame is calling, not executing an ``import`` statement. The module goes back to
    that C code, never to the request, so it is not judged as the request's import (which refuses
    private parts). Only modules already in ``sys.modules``, of a server package, qualify.
    """
    code = caller.f_code.co_code
    if caller.f_lasti < 0 or caller.f_lasti >= len(code) or code[caller.f_lasti] == _IMPORT_NAME:
        return False
    return level == 0 and isinstance(name, str) and name in sys.modules and \
        policy.classify_module(name.partition(".")[0]) == policy.SERVER
