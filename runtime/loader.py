"""Server side of a remote request: load a closed Program into live objects, safely.

:class:`Loader` turns a program's bindings into a namespace for its units:

* BIND_MODEL paths resolve against the model the server hosts, BIND_TRACER to
  the server's tracer;
* BIND_MODULE / BIND_OBJECT import server modules -- refusing anything the
  policy (:mod:`compiler.policy`) does not call ``"server"``: the server
  enforces the whitelist again -- or name a module the program carries by value;
* Definitions are executed from source in fresh module namespaces, one per
  user module (DEF_MODULE globals installed in module order, DEF_STATEMENT
  code run in place, DEF_LOCAL functions rebuilt in their own scope with their
  closure cells and defaults filled in). Code keeps its original file name and
  line numbers, so tracebacks point at the user's library;
* values are decoded from their trees; references to user classes resolve to
  the classes rebuilt here.

User code runs with restricted builtins: dangerous ones (``eval``, ``open``,
...) raise :class:`ServerRefusal`, and ``import`` only reaches server modules
and the program's own by-value modules.

:func:`block_user_modules` makes the interpreter look like a server that has
never seen the user's code: every user module is hidden from ``sys.modules``
and importing one fails, so anything captured by reference instead of by value
fails here exactly as it would remotely.
"""
import ast
import builtins
import contextlib
import importlib
import importlib.machinery
import logging
import sys
import types
from typing import Any, Dict, FrozenSet, Iterator, List, Optional, Tuple

from compiler import policy
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
    SourceLoc,
)
from compiler.ir.values import decode_value, default_classref
from compiler.public_homes import server_ref

from . import registries

_UNBOUND = object()
_BUILDING = "building"
_DONE = "done"
_SCOPE = "__nnsight_scope__"


class LoadError(Exception):
    """The program cannot be loaded on this server (malformed, or refused by policy)."""


class ServerRefusal(PermissionError):
    """User code called something the server refuses (a dangerous builtin)."""


class ServerImportError(ModuleNotFoundError):
    """User code imported a module the server does not provide."""


# -- blocking user modules -------------------------------------------------------------------


def is_user_module(name: str, module: Any) -> bool:
    """Would a server lack this imported module? (user code from files; registered packages)."""
    if module is None or not isinstance(module, types.ModuleType):
        return False
    if policy.is_registered(name):
        return True
    if policy._policy_kind(name) is not None:
        return False
    if name in ("__main__", "__mp_main__"):
        return policy.classify_module_object(module) == policy.USER
    d = module.__dict__  # never getattr: lazy modules import things on unknown attributes
    if d.get("__file__") is None and not d.get("__path__"):
        return False  # made at run time (e.g. by an extension module), not user code from a file
    return policy.classify_module(name) == policy.USER and policy.module_location(module) == "user"


class _UserModuleBlocker:
    """A meta-path finder that refuses to import user modules."""

    def __init__(self, allow: Dict[str, types.ModuleType]):
        self.allow = allow

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname in self.allow or policy._policy_kind(fullname) is not None:
            return None
        if policy.is_registered(fullname):
            raise _blocked(fullname)
        try:
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        except Exception:
            return None
        if spec is None:
            return None
        places = [spec.origin] if spec.origin and spec.origin not in ("built-in", "frozen") else []
        places += list(spec.submodule_search_locations or [])
        if places and all(policy.location_of_path(p) == "user" for p in places):
            raise _blocked(fullname)
        return None


def _blocked(name: str) -> ServerImportError:
    return ServerImportError(
        "No module named %r on the server: remote='local' hides your own modules, as a remote server "
        "does not have them. Code and data reach the server only by value -- if this import comes from "
        "a captured function, the module is not captured (register it with nnsight.register(%r), or "
        "import what you need at module level)." % (name, name.split(".")[0]), name=name)


# name -> (module object, registrations then, is_user_module's answer). Whether an imported
# module is user code depends only on the module (its name and file) and the registrations, so
# each is classified once instead of at every remote='local' trace (~1,500 modules, ~20 ms).
_USER_MODULE_MEMO: Dict[str, Tuple[Any, FrozenSet[str], bool]] = {}


@contextlib.contextmanager
def block_user_modules(allow: Optional[Dict[str, types.ModuleType]] = None) -> Iterator[Dict[str, Any]]:
    """Hide user modules from ``sys.modules`` and refuse to import them, for the ``with`` body.

    ``allow`` maps module names to modules that stay importable (the
    program's by-value modules). Yields the hidden modules; they are restored
    on exit, whatever happened inside.
    """
    hidden: Dict[str, Any] = {}
    registrations = policy.registered()
    memo = _USER_MODULE_MEMO
    if len(memo) > 2 * len(sys.modules) + 256:
        memo.clear()  # modules removed from sys.modules since: forget them
    for name, module in list(sys.modules.items()):
        hit = memo.get(name)
        if hit is not None and hit[0] is module and hit[1] == registrations:
            user = hit[2]
        else:
            user = is_user_module(name, module)
            if name not in ("__main__", "__mp_main__"):  # their contents decide: asked each time
                memo[name] = (module, registrations, user)
        if user:
            hidden[name] = sys.modules.pop(name)
    blocker = _UserModuleBlocker(allow if allow is not None else {})
    sys.meta_path.insert(0, blocker)
    try:
        yield hidden
    finally:
        try:
            sys.meta_path.remove(blocker)
        except ValueError:
            pass
        for name, module in hidden.items():
            sys.modules[name] = module


# -- restricted builtins ------------------------------------------------------------------------


def _refused(name: str, reason: str):
    def refused(*args, **kwargs):
        raise ServerRefusal("%s() is not available on the server: %s" % (name, reason))

    refused.__name__ = refused.__qualname__ = name
    return refused


def restricted_builtins(importer) -> Dict[str, Any]:
    """The builtins user code sees on the server."""
    table = dict(builtins.__dict__)
    for name, reason in policy.DANGEROUS_BUILTINS.items():
        table[name] = _refused(name, reason)
    for name in ("input", "breakpoint"):
        table[name] = _refused(name, "there is no terminal on the server")
    table["__import__"] = importer
    return table


# -- compiling user code where it was written -----------------------------------------------------


def _shift(tree: ast.AST, loc: SourceLoc, all_lines: bool = True) -> ast.AST:
    """Move line/column numbers back to where the code stands in the user's file.

    Sources of statements lost ``loc.col`` columns on every line; a lambda's
    only on its first (its other lines are kept as written).
    """
    line_shift, col_shift = loc.line - 1, loc.col
    if line_shift or col_shift:
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) is not None:
                shift_col = col_shift and (all_lines or node.lineno == 1)
                shift_end = col_shift and (all_lines or getattr(node, "end_lineno", None) == 1)
                node.lineno += line_shift
                if getattr(node, "end_lineno", None) is not None:
                    node.end_lineno += line_shift
                if shift_col and hasattr(node, "col_offset"):
                    node.col_offset += col_shift
                if shift_end and getattr(node, "end_col_offset", None) is not None:
                    node.end_col_offset += col_shift
    return tree


class _StripSignature(ast.NodeTransformer):
    """Defaults come from the captured values, annotations are not rebuilt (DEF_LOCAL)."""

    def __init__(self, target: ast.AST):
        self.target = target

    def _strip(self, node):
        args = node.args
        args.defaults = [ast.copy_location(ast.Constant(value=None), d) for d in args.defaults]
        args.kw_defaults = [None if d is None else ast.copy_location(ast.Constant(value=None), d)
                            for d in args.kw_defaults]
        for a in list(args.posonlyargs) + list(args.args) + list(args.kwonlyargs) + [args.vararg, args.kwarg]:
            if a is not None:
                a.annotation = None
        if hasattr(node, "returns"):
            node.returns = None
        return node

    def visit(self, node):
        if node is self.target:
            return self._strip(node)
        return node


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


class Loader:
    """Builds the objects of one program (see the module docstring)."""

    def __init__(self, program: Program, *, model: Any = None, tracer: Any = None):
        self.program = program
        self.defs = program.definitions
        self.model = model
        self.tracer = tracer
        self.module_defs: Dict[str, int] = {}
        for i, d in enumerate(self.defs):
            if d.kind == DEF_MODULE:
                if policy._policy_kind(d.module) is not None or d.module in ("builtins",):
                    raise LoadError("the program carries module %r by value, but that name belongs to the "
                                    "server" % d.module)
                self.module_defs[d.module] = i
        self.modules: Dict[str, types.ModuleType] = {}
        self.mstate: Dict[str, str] = {}
        self.state: List[Optional[str]] = [None] * len(self.defs)
        self.objs: List[Any] = [None] * len(self.defs)
        self.ids: Dict[int, int] = {}
        self.builtins = restricted_builtins(self._import)
        self._installing: Optional[Dict[str, Any]] = None

    # -- sys.modules while a request runs ------------------------------------------------------

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Make the program's by-value modules visible in ``sys.modules`` (dataclasses, pickle,
        typing and ``import`` statements look there) for the ``with`` body."""
        previous = self._installing
        self._installing = {}
        for name, module in self.modules.items():
            self._install(name, module)
        try:
            yield
        finally:
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
            return ast.parse(d.source, filename=d.loc.file, mode=mode)
        except SyntaxError as e:
            raise LoadError("definition %r (%s:%d) does not parse on this server: %s" % (
                d.name, d.loc.file, d.loc.line, e)) from e

    def _run_statement(self, d: Definition, ns: Dict[str, Any]) -> Any:
        tree = _shift(self._parse(d), d.loc)
        code = compile(tree, d.loc.file, "exec", dont_inherit=True)
        exec(code, ns)
        if d.name not in ns:
            raise LoadError("definition %r did not define %r" % (d.name, d.name))
        return ns[d.name]

    def _build_local(self, d: Definition, index: int, ns: Dict[str, Any]) -> Any:
        stripped = d.source.rstrip("\n")
        lam = stripped.startswith("lambda")
        if lam:
            try:
                expr = ast.parse("(" + stripped + ")", filename=d.loc.file, mode="eval").body
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
        code = compile(module, d.loc.file, "exec", dont_inherit=True)
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
            return self.decode(value)
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
                    obj = getattr(obj, part)
                return obj
            if tag == "module" and len(ref) == 2:
                return self.import_module(ref[1])
            if tag == "model" and len(ref) == 2:
                return self.envoy(ref[1])
            if tag == "tracer":
                return self.resolve(Binding("tracer", BIND_TRACER))
            if tag == "logger" and len(ref) == 2 and isinstance(ref[1], str):
                return logging.getLogger(ref[1])
        raise LoadError("unknown reference %r in a value" % (ref,))

    def object(self, ref: Any) -> Any:
        """``"module:qualname"``: an attribute of a server module or of a by-value module."""
        if not isinstance(ref, str) or ref.count(":") != 1:
            raise LoadError("bad object reference %r" % (ref,))
        mod, qual = ref.split(":")
        if mod == "builtins" and qual in self.builtins:
            return self.builtins[qual]
        obj: Any = self.import_module(mod)
        for part in qual.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise LoadError("%s has no attribute %r (needed for %r)" % (mod, part, ref)) from None
        if not self._by_value(mod):
            inner = mod + "." + qual
            if policy.classify_module(inner) == policy.DANGEROUS:
                raise ServerImportError("%r is not available on the server: %s" % (
                    inner, policy.module_reason(inner)), name=inner)
        return obj

    def import_module(self, name: str) -> types.ModuleType:
        if not isinstance(name, str) or not name:
            raise LoadError("bad module name %r" % (name,))
        if self._by_value(name):
            return self.module(name)
        kind = policy.classify_module(name)
        if kind != policy.SERVER:
            raise ServerImportError("module %r is not available on the server (%s)" % (
                name, policy.module_reason(name)), name=name)
        return importlib.import_module(name)

    def _import(self, name, globals=None, locals=None, fromlist=(), level=0):
        """``__import__`` of user code on the server."""
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
        kind = policy.classify_module(absname)
        if kind != policy.SERVER:
            raise ServerImportError("module %r is not available on the server (%s)" % (
                absname, policy.module_reason(absname)), name=absname)
        for item in fromlist or ():
            sub = absname + "." + item
            if item != "*" and policy.classify_module(sub) == policy.DANGEROUS:
                raise ServerImportError("%r is not available on the server: %s" % (
                    sub, policy.module_reason(sub)), name=sub)
        return builtins.__import__(absname, globals, locals, fromlist, 0)

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
            obj = children[part] if part in children else getattr(obj, part)
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


registries.track("runtime.loader.user_module_memo", lambda: len(_USER_MODULE_MEMO), None)  # <= 2 x sys.modules + 256
