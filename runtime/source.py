"""Source tracing: rewrite a function so each call and assignment in its body is a provider.

:func:`inject` parses a function's source and rewrites every call
``f(a, b=c)`` in its body into ``__nnsight_op__("f_0", f)(a, b=c)``, and
every assignment to one name, attribute or subscript ``x = v`` into
``x = __nnsight_op__("x_0", None)(v)`` (its input and output are the assigned
value). Tuple targets and augmented assignments (``a, b = ...``, ``x += 1``)
are not operations, as in nnsight 0.8.

Names follow nnsight: the dotted callee or target joined by ``_``
(``self.c_proj`` → ``self_c_proj``), or its last attribute for a computed
receiver (``x.view(...).transpose`` → ``transpose``), numbered per name in
evaluation order. Two numberings exist, and both work:

* a call's own name counts only the calls of that name (``attention_interface_0``
  is GPT-2's attention call, as nnsight's documentation has always shown it);
* nnsight 0.8 counts calls and assignments of a name together, so there the
  same call is ``attention_interface_1`` (``attention_interface = ...`` is
  ``_0``). That name reaches the call too, unless it is another call's own name.

An assignment keeps its 0.8 name unless a call owns it; it then takes the next
free number of its name (GPT-2's ``attention_interface = ...`` is
``attention_interface_2``). ``print(envoy.source)`` shows each operation's own name.

The rewritten code is compiled with the original file name and line numbers,
so tracebacks and debuggers still point at the library's own source.

:func:`build` makes a fresh function from it whose ``__nnsight_op__`` is an
:class:`OpHook`: while its interleaver runs, each call ``op`` offers three
providers in order: ``<prefix>.<op>.fn`` (the callee, swapped by recursive
``.source``), ``<prefix>.<op>.input`` (``(args, kwargs)``) and
``<prefix>.<op>.output``; ``op.skip(value)`` makes the callee not run.
Otherwise the callee is called directly.

The rewritten forward of a module is used by the interleaver only for the
duration of an execution (``Interleaver.sources``); the model itself is never
changed.
"""
import ast
import inspect
import textwrap
import types
import weakref
from collections import defaultdict
from typing import Callable, Dict, FrozenSet, List, Optional, Tuple

from compiler import pyast

from . import registries
from .errors import SourceNotAvailable
from .interleaver import _combine_skips

OP = "__nnsight_op__"
_FACTORY = "__nnsight_factory__"
# Builtins that inspect their caller's frame: wrapping them would break them.
_FRAME_BUILTINS = frozenset({"super", "locals", "globals", "vars", "dir", "eval", "exec", "breakpoint"})


class SourceError(SourceNotAvailable):
    """The function's source can't be found or rewritten."""


class Injected:
    """A function's rewritten code, shared by every :func:`build` of it."""

    __slots__ = ("name", "filename", "def_line", "source", "operations", "aliases", "assignments", "factory",
                 "decorators", "freevars")

    def __init__(self, name, filename, def_line, source, operations, aliases, assignments, factory, decorators,
                 freevars):
        self.name = name
        self.filename = filename
        self.def_line = def_line  # file line of the ``def``
        self.source = source  # the function's source from its ``def`` line, dedented
        self.operations: List[Tuple[str, int]] = operations  # (op name, file line), in order
        self.aliases: Dict[str, str] = aliases  # nnsight 0.8 name -> op name, where they differ
        self.assignments: FrozenSet[str] = assignments  # op names that are assignments, not calls
        self.factory = factory  # code object: (__nnsight_op__, *freevars) -> function
        self.decorators = decorators  # code objects of decorator expressions, innermost first
        self.freevars = freevars


def _callee_name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        parts = []
        current = func
        while isinstance(current, ast.Attribute):
            parts.append(current.attr)
            current = current.value
        if isinstance(current, ast.Name):
            parts.append(current.id)
        return "_".join(reversed(parts))
    return "unknown"


def _target_name(target: ast.expr) -> Optional[str]:
    """The name of an assignment's target (``self.state["k"]`` → ``self_state``); None for tuples."""
    while isinstance(target, ast.Subscript):
        target = target.value
    if isinstance(target, (ast.Name, ast.Attribute)):
        return _callee_name(target)
    return None


class _WrapOperations(ast.NodeTransformer):
    """Wraps calls and single-target assignments; names them once the whole body is seen."""

    def __init__(self) -> None:
        self.call_counts: Dict[str, int] = defaultdict(int)
        self.shared_counts: Dict[str, int] = defaultdict(int)  # nnsight 0.8: calls and assignments
        # (is_call, base, own number, 0.8 number, line, the name constant to fill in)
        self.found: List[Tuple[bool, str, int, int, int, ast.Constant]] = []

    def _record(self, is_call: bool, base: str, line: int) -> ast.Constant:
        constant = ast.Constant(value=None)
        own = self.call_counts[base] if is_call else -1
        if is_call:
            self.call_counts[base] += 1
        self.found.append((is_call, base, own, self.shared_counts[base], line, constant))
        self.shared_counts[base] += 1
        return constant

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)  # inner calls first: they run first
        if isinstance(node.func, ast.Name) and node.func.id in _FRAME_BUILTINS:
            return node
        constant = self._record(True, _callee_name(node.func), node.lineno)
        hook = ast.Call(func=ast.Name(id=OP, ctx=ast.Load()), args=[constant, node.func], keywords=[])
        ast.copy_location(hook, node.func)
        ast.copy_location(hook.func, node.func)
        ast.copy_location(constant, node.func)
        node.func = hook
        return node

    def _wrap_value(self, node, target: ast.expr) -> ast.AST:
        node.value = self.visit(node.value)  # the value runs before the target's own expressions
        target = self.visit(target)
        name = _target_name(target)
        if name is None:
            return node
        constant = self._record(False, name, node.lineno)
        hook = ast.Call(func=ast.Name(id=OP, ctx=ast.Load()), args=[constant, ast.Constant(value=None)],
                        keywords=[])
        call = ast.Call(func=hook, args=[node.value], keywords=[])
        for made in (call, hook, hook.func, hook.args[1], constant):
            ast.copy_location(made, node.value)
        node.value = call
        return node

    def visit_Assign(self, node: ast.Assign) -> ast.AST:
        if len(node.targets) != 1:
            return self.generic_visit(node)
        node = self._wrap_value(node, node.targets[0])
        node.targets = [node.targets[0]]
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        if node.value is None:
            return node
        return self._wrap_value(node, node.target)

    def finish(self) -> Tuple[List[Tuple[str, int]], Dict[str, str], FrozenSet[str]]:
        """Fill in the names: ``(operations, aliases, assignments)`` as :class:`Injected` keeps them."""
        taken = {f"{base}_{own}" for is_call, base, own, _, _, _ in self.found if is_call}
        names = []
        for is_call, base, own, shared, _, _ in self.found:
            if is_call:
                names.append(f"{base}_{own}")
                continue
            name = f"{base}_{shared}"
            if name in taken:  # a call owns the 0.8 name: the next free number of this name
                n = self.shared_counts[base]
                while f"{base}_{n}" in taken:
                    n += 1
                name = f"{base}_{n}"
            taken.add(name)
            names.append(name)
        aliases = {}
        for (is_call, base, _, shared, _, _), name in zip(self.found, names):
            old = f"{base}_{shared}"
            if is_call and old != name and old not in taken:
                aliases[old] = name
        operations = []
        for (_, _, _, _, line, constant), name in zip(self.found, names):
            constant.value = name
            operations.append((name, line))
        assignments = frozenset(name for (is_call, *_), name in zip(self.found, names) if not is_call)
        return operations, aliases, assignments


def _plain_function(fn: Callable) -> types.FunctionType:
    """The Python function behind ``fn``; for a function :func:`build` made, the one it was made from."""
    fn = inspect.unwrap(fn)
    if isinstance(fn, types.MethodType):
        fn = fn.__func__
    built = getattr(fn, _BUILT, None)
    if built is not None:
        fn = built[0]
    if not isinstance(fn, types.FunctionType):
        raise SourceError(f"{fn!r} is not a Python function; its source can't be traced.")
    return fn


# forward code object -> its rewritten form: one per module class whose `.source` was used (the
# model's own code, not per request), so it is tracked but not bounded
_cache: Dict[types.CodeType, Injected] = {}
_BUILT = "__nnsight_built__"  # on a function build() made: (the original plain function, its hook)


def inject(fn: Callable) -> Injected:
    """The rewritten code of ``fn`` (a function, method or decorated function); cached per code object."""
    fn = _plain_function(fn)
    code = fn.__code__
    injected = _cache.get(code)
    if injected is None:
        injected = _inject(fn)
        _cache[code] = injected
    return injected


def _inject(fn: types.FunctionType) -> Injected:
    code = fn.__code__
    filename = code.co_filename
    try:
        lines, first_line = inspect.getsourcelines(fn)
    except (OSError, TypeError) as error:
        raise SourceError(f"Can't find the source of {fn.__qualname__} ({filename}): {error}") from None
    text = textwrap.dedent("".join(lines))
    try:
        tree = pyast.parse(text)
    except SyntaxError as error:
        raise SourceError(f"Can't parse the source of {fn.__qualname__}: {error}") from None
    ast.increment_lineno(tree, first_line - 1)
    funcdef = tree.body[0]
    if not isinstance(funcdef, (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise SourceError(f"The source of {fn.__qualname__} is not a def statement (a lambda?).")

    decorator_nodes = list(funcdef.decorator_list)
    funcdef.decorator_list = []
    # Defaults and annotations are evaluated when the def runs: keep the original
    # values instead (they may name class-level things the factory can't see).
    args = funcdef.args
    args.defaults = [ast.Constant(value=None) for _ in args.defaults]
    args.kw_defaults = [None if d is None else ast.Constant(value=None) for d in args.kw_defaults]
    funcdef.returns = None
    for a in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
        if a is not None:
            a.annotation = None

    wrapper = _WrapOperations()
    funcdef.body = [wrapper.visit(stmt) for stmt in funcdef.body]
    operations, aliases, assignments = wrapper.finish()

    freevars = code.co_freevars
    factory = ast.FunctionDef(
        name=_FACTORY,
        args=ast.arguments(posonlyargs=[], args=[ast.arg(arg=OP)] + [ast.arg(arg=v) for v in freevars],
                           vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[]),
        body=[funcdef, ast.Return(value=ast.Name(id=funcdef.name, ctx=ast.Load()))],
        decorator_list=[], returns=None)
    if "type_params" in ast.FunctionDef._fields:
        factory.type_params = []
    ast.copy_location(factory, funcdef)
    module = ast.Module(body=[factory], type_ignores=[])
    ast.fix_missing_locations(module)
    compiled = pyast.compile_tree(module, filename, "exec")
    factory_code = next(c for c in compiled.co_consts if isinstance(c, types.CodeType) and c.co_name == _FACTORY)

    decorators = []
    for node in reversed(decorator_nodes):  # innermost (closest to the def) first
        expr = ast.Expression(body=node)
        ast.fix_missing_locations(expr)
        decorators.append(pyast.compile_tree(expr, filename, "eval"))

    def_line = funcdef.lineno
    source_lines = text.splitlines()[def_line - first_line:]
    return Injected(fn.__name__, filename, def_line, "\n".join(source_lines), operations, aliases, assignments,
                    factory_code, decorators, freevars)


def build(fn: Callable, hook: "OpHook", injected: Optional[Injected] = None) -> Callable:
    """A new function running ``fn``'s rewritten code with ``hook`` as its operation hook.

    ``fn``'s decorators are applied again (one that fails on a bare function,
    like a docstring generator, is left out). Bound methods come back bound to
    the same object.
    """
    bound_to = fn.__self__ if isinstance(fn, types.MethodType) else None
    given = fn.__func__ if isinstance(fn, types.MethodType) else fn
    built = getattr(given, _BUILT, None)
    if built is not None and built[1] is hook:  # already this hook's (another invoke swapped it in)
        return fn
    if built is not None:
        fn = given = built[0] if bound_to is None else types.MethodType(built[0], bound_to)
    plain = _plain_function(fn)
    injected = injected or inject(plain)
    cells = []
    for cell in plain.__closure__ or ():
        try:
            cells.append(cell.cell_contents)
        except ValueError:
            raise SourceError(f"{plain.__qualname__} closes over an unbound variable; it can't be traced.") from None
    factory = types.FunctionType(injected.factory, plain.__globals__, _FACTORY)
    new = factory(hook, *cells)
    new.__defaults__ = plain.__defaults__
    new.__kwdefaults__ = plain.__kwdefaults__
    new.__qualname__ = plain.__qualname__
    new.__module__ = plain.__module__
    new.__doc__ = plain.__doc__
    new.__dict__.update(getattr(plain, "__dict__", {}))
    new.__dict__.pop("__wrapped__", None)
    new.__dict__[_BUILT] = (plain, hook)
    if given is not plain and injected.decorators:  # ``fn`` was the decorated function
        env = dict(zip(injected.freevars, cells))
        for deco_code in injected.decorators:
            try:
                decorator = eval(deco_code, plain.__globals__, env)
                new = decorator(new)
            except Exception:
                continue
    if bound_to is not None:
        return types.MethodType(new, bound_to)
    return new


# ---------------------------------------------------------------- the provider hook

class OpHook:
    """``__nnsight_op__`` of one built function: routes its calls through an interleaver.

    prefix: the provider prefix of the operations (``model.transformer.h.0.attn``).
    Holds its interleaver weakly: a built forward never keeps a model wrapper alive.
    """

    __slots__ = ("prefix", "_interleaver", "_keys", "__weakref__")

    def __init__(self, prefix: str, interleaver) -> None:
        self.prefix = prefix
        self._interleaver = weakref.ref(interleaver)
        self._keys: Dict[str, Tuple[str, str, str]] = {}

    def __call__(self, name: str, fn: Optional[Callable]) -> Callable:
        if fn is None:  # an assignment: its value passes through
            fn = _assigned
        interleaver = self._interleaver()
        if interleaver is None or not interleaver.active:
            return fn
        keys = self._keys.get(name)
        if keys is None:
            base = f"{self.prefix}.{name}"
            keys = self._keys[name] = (base + ".fn", base + ".input", base + ".output")
        return _Operation(interleaver, keys, fn)


def _assigned(value):
    """The "callee" of an assignment operation: its input is its output."""
    return value


class _Operation:
    __slots__ = ("interleaver", "keys", "fn")

    def __init__(self, interleaver, keys, fn) -> None:
        self.interleaver = interleaver
        self.keys = keys
        self.fn = fn

    def __call__(self, *args, **kwargs):
        interleaver = self.interleaver
        handle = interleaver.handle
        fn_key, in_key, out_key = self.keys
        fn = handle(fn_key, self.fn)
        args, kwargs = handle(in_key, (args, kwargs))
        skips = interleaver._skips
        skipped = skips.pop(in_key, None) if skips else None
        if skipped is None:
            output = fn(*args, **kwargs)
        else:  # `op.skip(value)` in every invoke: the callee does not run
            output = _combine_skips(skipped, interleaver.batcher.total)
        return handle(out_key, output)


def activate(interleaver, path: str, module, forward: Callable) -> None:
    """Use ``forward`` (a function taking the module) as ``module``'s forward in ``interleaver``.

    From the next execution on it is what the interleaver patches in; if the
    interleaver is running and has already patched ``module``, the patch is
    redone now so this execution uses it too.
    """
    interleaver.sources[module] = forward
    if not interleaver.active:
        return
    current = module.__dict__.get("forward")
    original = getattr(current, "__nnsight_original__", None)
    if original is None or not any(m is module for m, _ in interleaver._patched):
        return
    module.__dict__["forward"] = interleaver._forward(path, types.MethodType(forward, module))


registries.track("runtime.source.injected_forwards", lambda: len(_cache), None)
