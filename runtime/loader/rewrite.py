"""Lower user code to its guarded form: an AST pass run when a request's code is built.

Only code that arrives in a request (units and by-value definitions) goes
through here; local traces compile the user's code as written.

Static part -- refused with :class:`ServerRefusal` at build time, at the
user's file:line:col, with the checker's code:

* an attribute refused on every object (``x.__globals__``, ``f.f_back``,
  ``C.mro``: :func:`compiler.access.attribute_class`), NN402;
* a reserved variable name (``__builtins__``, ``__import__``, the guards'
  own ``__nnsight_*`` names) read, written, bound as an argument, a ``def``
  or an import alias, NN402;
* ``getattr(x, "<refused name>")`` and the like with a literal name, NN403;
  ``type(name, bases, dict)`` with three arguments, NN403;
* a ``match`` class pattern naming a refused or private attribute, or
  matching a nested pattern inside a keyword attribute (the interpreter reads
  those past any guard), NN402; the subject of a ``match`` goes through the
  guard (a module becomes its view).

Dynamic part -- every other attribute access is rewritten to a call of the
request's :class:`runtime.loader.guard.Guard` (its hooks live in the
request's builtins, where user code cannot name them):

* ``x.name`` -> ``__nnsight_attr__(x, "name")`` (``__nnsight_private__`` for
  ``_name``, ``__nnsight_special__`` for ``__getattr__``-like names);
* ``x.name = v`` / ``del x.name`` -> ``__nnsight_store__(x, "name").name = v``,
  which checks that ``x`` may be written before the store happens;
* where request code starts or resumes -- the first line of a function, a
  lambda, after a ``yield`` or an ``await``, each step of a generator
  expression -- ``__nnsight_request__()`` switches the request's tensor-side
  check on (:mod:`runtime.loader.tensor_side`): server code, the model's
  forward among it, may be what called it.

String annotations are rewritten too (they are evaluated by ``typing``).
"""
import ast
from typing import Callable, Optional

from compiler import access
from compiler import pyast

from .errors import ServerRefusal

ATTR, PRIVATE, SPECIAL, STORE = "__nnsight_attr__", "__nnsight_private__", "__nnsight_special__", "__nnsight_store__"
VALUE = "__nnsight_value__"
# Called where request code starts or resumes running (a function's first line, a lambda, after a yield or
# an await, each step of a generator expression): the request's tensor-side check is switched on there,
# since server code -- the model's forward among it -- may be what called it.
REQUEST, RESUMED = "__nnsight_request__", "__nnsight_resumed__"
_PLAIN_PATTERNS = ("MatchValue", "MatchSingleton")
_LOAD_HOOK = {access.PUBLIC: ATTR, access.PRIVATE: PRIVATE, access.MEDIATED: SPECIAL}
_ATTR_BUILTINS = frozenset(("getattr", "setattr", "delattr", "hasattr"))


def refusal(file: str, node: Optional[ast.AST], code: str, message: str) -> ServerRefusal:
    """A ServerRefusal that names the user's file:line:col and the checker's code."""
    line = getattr(node, "lineno", 0) or 0
    col = getattr(node, "col_offset", 0) or 0
    return ServerRefusal("%s:%d:%d: %s %s" % (file, line, col + 1, code, message), code=code)


def attribute_message(name: str) -> str:
    return "attribute %r is not available on the server: %s" % (name, access.attribute_reason(name))


class GuardRewriter(ast.NodeTransformer):
    """Checks and rewrites one tree of user code (see the module docstring)."""

    def __init__(self, file: str):
        self.file = file

    def refuse(self, node: ast.AST, code: str, message: str) -> ServerRefusal:
        return refusal(self.file, node, code, message)

    def name(self, node: ast.AST, name: Optional[str]) -> None:
        if name and access.reserved_name(name):
            raise self.refuse(node, "NN402", "the name %r is not available on the server: the server "
                                             "blocks interpreter internals" % name)
        if name in access.NATIVE_PROTOCOLS:
            raise self.refuse(node, "NN402", "%r cannot be defined on the server: %s" % (
                name, access.NATIVE_PROTOCOLS[name]))

    # -- names -------------------------------------------------------------------------------

    def visit_Name(self, node: ast.Name) -> ast.AST:
        self.name(node, node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.AST:
        self.name(node, node.arg)
        node.annotation = self.annotation(node.annotation)
        return node

    def visit_alias(self, node: ast.alias) -> ast.AST:
        self.name(node, node.asname or node.name.split(".")[0])
        return node

    def visit_Global(self, node: ast.Global) -> ast.AST:
        for n in node.names:
            self.name(node, n)
        return node

    visit_Nonlocal = visit_Global

    def _visit_def(self, node):
        self.name(node, node.name)
        if hasattr(node, "returns"):
            node.returns = self.annotation(node.returns)
        self.generic_visit(node)
        if not isinstance(node, ast.ClassDef):  # its first statement (after a docstring) switches the check on
            body = node.body
            at = 1 if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str) else 0
            body.insert(at, _located(ast.Expr(value=_call(REQUEST)), body[min(at, len(body) - 1)]))
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _visit_def

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        self.generic_visit(node)
        node.body = _first(node.body)
        return node

    def _visit_resume(self, node):
        self.generic_visit(node)
        return _located(_call(RESUMED, node), node)

    visit_Yield = visit_YieldFrom = visit_Await = _visit_resume

    def visit_GeneratorExp(self, node: ast.GeneratorExp) -> ast.AST:
        self.generic_visit(node)  # each step runs where the generator is resumed: its conditions and value
        node.elt = _first(node.elt)
        for i, comp in enumerate(node.generators):
            if i:
                comp.iter = _first(comp.iter)
            comp.ifs = [_first(cond) for cond in comp.ifs]
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        node.annotation = self.annotation(node.annotation)
        self.generic_visit(node)
        return node

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.AST:
        self.name(node, node.name)
        self.generic_visit(node)
        return node

    def annotation(self, node: Optional[ast.AST]) -> Optional[ast.AST]:
        """A string annotation, checked and rewritten like code (``typing`` may evaluate it)."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:
                expr = pyast.parse(node.value.strip(), mode="eval")
            except SyntaxError:
                return node
            ast.copy_location(expr.body, node)
            for inner in ast.walk(expr):
                if hasattr(inner, "lineno"):
                    ast.copy_location(inner, node)
            guarded = self.visit(expr)
            return ast.copy_location(ast.Constant(value=ast.unparse(guarded.body)), node)
        return node

    # -- attributes --------------------------------------------------------------------------

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        kind = access.attribute_class(node.attr)
        if kind == access.REFUSED:
            raise self.refuse(node, "NN402", attribute_message(node.attr))
        if isinstance(node.ctx, ast.Load):
            call = ast.Call(func=ast.Name(id=_LOAD_HOOK[kind], ctx=ast.Load()),
                            args=[node.value, ast.Constant(value=node.attr)], keywords=[])
            return _located(call, node)
        node.value = _located(ast.Call(func=ast.Name(id=STORE, ctx=ast.Load()),
                                       args=[node.value, ast.Constant(value=node.attr)], keywords=[]), node.value)
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        fn = node.func
        if isinstance(fn, ast.Name):
            if fn.id in _ATTR_BUILTINS and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) \
                    and isinstance(node.args[1].value, str) \
                    and access.attribute_class(node.args[1].value) == access.REFUSED:
                raise self.refuse(node.args[1], "NN403", "%s() with the name %r: %s" % (
                    fn.id, node.args[1].value, attribute_message(node.args[1].value)))
            if fn.id == "type" and len(node.args) == 3:
                raise self.refuse(node, "NN403", "type() with three arguments builds a class past the "
                                                 "server's checks: write a class statement instead")
        self.generic_visit(node)
        return node

    def visit_MatchAs(self, node) -> ast.AST:  # capture patterns bind names too (3.10+)
        self.name(node, node.name)
        self.generic_visit(node)
        return node

    def visit_MatchStar(self, node) -> ast.AST:
        self.name(node, node.name)
        return node

    def visit_MatchMapping(self, node) -> ast.AST:
        self.name(node, node.rest)
        self.generic_visit(node)
        return node

    def visit_Match(self, node) -> ast.AST:
        """The subject goes through the guard (a module becomes its view, whose attributes are
        checked even when a class pattern reads them)."""
        self.generic_visit(node)
        node.subject = _located(ast.Call(func=ast.Name(id=VALUE, ctx=ast.Load()), args=[node.subject],
                                         keywords=[]), node.subject)
        return node

    def visit_MatchClass(self, node) -> ast.AST:  # Python 3.10+
        for attr, pattern in zip(node.kwd_attrs, node.kwd_patterns):
            if access.attribute_class(attr) != access.PUBLIC:
                raise self.refuse(node, "NN402", "a class pattern cannot read attribute %r on the server "
                                                 "(patterns read attributes past the server's checks)" % attr)
            if not _plain(pattern):
                raise self.refuse(pattern, "NN402", "a class pattern cannot match a pattern inside attribute "
                                                    "%r on the server (patterns read attributes past the "
                                                    "server's checks): capture it and match it separately" % attr)
        self.generic_visit(node)
        return node


def _plain(pattern: ast.AST) -> bool:
    """A capture, a wildcard, a literal, or an alternative of those (no attribute reads below)."""
    name = type(pattern).__name__
    if name == "MatchAs":
        return pattern.pattern is None or _plain(pattern.pattern)
    if name == "MatchOr":
        return all(_plain(p) for p in pattern.patterns)
    return name in _PLAIN_PATTERNS


def _call(hook: str, *args: ast.AST) -> ast.Call:
    return ast.Call(func=ast.Name(id=hook, ctx=ast.Load()), args=list(args), keywords=[])


def _first(expr: ast.AST) -> ast.AST:
    """``(__nnsight_request__(), expr)[1]``: the hook, then ``expr``."""
    pair = ast.Tuple(elts=[_call(REQUEST), expr], ctx=ast.Load())
    return _located(ast.Subscript(value=pair, slice=ast.Constant(value=1), ctx=ast.Load()), expr)


def _located(new: ast.AST, old: ast.AST) -> ast.AST:
    for n in ast.walk(new):
        if not hasattr(n, "lineno") or getattr(n, "lineno", None) is None:
            ast.copy_location(n, old)
    ast.copy_location(new, old)
    return new


def guard_tree(tree: ast.AST, file: str) -> ast.AST:
    """Check and rewrite ``tree`` in place (returns it); raises ServerRefusal at the first problem."""
    tree = GuardRewriter(file).visit(tree)
    ast.fix_missing_locations(tree)
    return tree


Rewrite = Callable[[ast.AST, str], ast.AST]
