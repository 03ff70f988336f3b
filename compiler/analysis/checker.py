"""Check one Python source text for code that cannot run remotely.

Static only: the text is parsed with libcst, never imported or executed. Two
passes keep clean files cheap:

1. a plain walk checks every import and collects *candidates*: names and
   attribute chains that, by the file's imports, could be a refused builtin
   (``eval``, ``builtins.open``), a refused module reached through an allowed
   one (``torch.hub``), or a ``getattr`` dunder trick;
2. only if there are candidates, libcst's ScopeProvider confirms each one, so
   a local ``def open(...)`` or a parameter named ``eval`` is not the builtin
   and ``import os.path as p; p.join`` is ``os.path.join``.

Positions (PositionProvider) are computed only when something is reported.
Imports under ``if TYPE_CHECKING:`` never run and are not checked. See
:mod:`compiler.analysis.codes` for the codes.
"""
from __future__ import annotations

import os
from typing import Dict, FrozenSet, List, Optional, Set, Tuple, Union

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider, QualifiedNameSource, ScopeProvider

from ..diagnostics import Diagnostic
from ..frontend.parse import PARSER_CONFIG, split_lines
from ..ir.version import MIN_PYTHON
from .. import access, public_homes, unresolved
from . import codes, modules, rules, server
from .syntax import Version, newer_syntax, syntax_error

Finding = Tuple[str, cst.CSTNode, str]  # code, node to underline, message

_SCOPE_SOURCES = (QualifiedNameSource.BUILTIN, QualifiedNameSource.IMPORT)


class SourceContext:
    """What the checker needs to know about a file besides its text.

    path: the file name shown in diagnostics.
    base_dir: directory of the file (relative imports resolve against it).
    root: directory the file is imported from (see :func:`modules.import_root`).
    local: top-level module names that are the user's own code (captured by value).
    target: the Python version the code must parse on.
    """

    def __init__(self, path: str, *, base_dir: Optional[str] = None, root: Optional[str] = None,
                 local: FrozenSet[str] = frozenset(), target: Version = MIN_PYTHON):
        self.path = path
        self.base_dir = base_dir
        self.root = root
        self.local = local
        self.target = target

    def kind(self, name: str) -> str:
        """The policy's kind of module ``name``; the user's own modules are ``"user"``."""
        if name.split(".", 1)[0] in self.local:
            return server.USER
        return server.module_kind(name)


def check_text(text: str, ctx: SourceContext) -> List[Diagnostic]:
    """All findings of one source text, sorted by position."""
    try:
        module = cst.parse_module(text, config=PARSER_CONFIG)
    except Exception as e:  # libcst.ParserSyntaxError, or the native parser's errors
        return [syntax_error(text, e, ctx.path)]
    wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
    lazy: Dict[str, object] = {}

    def positions():
        if "p" not in lazy:
            lazy["p"] = wrapper.resolve(PositionProvider)
        return lazy["p"]

    scan = _Scan(ctx)
    module.visit(scan)
    findings = list(scan.findings)
    candidates = _candidates(scan, ctx)
    if candidates:
        findings += _confirm(candidates, wrapper.resolve(ScopeProvider), scan, ctx)
    lines = [line.rstrip("\r\n") for line in split_lines(text)]
    out = _Emitter(ctx.path, lines)
    for line, name, version in newer_syntax(module, lambda n: positions()[n].start.line, ctx.target):
        out.line(line, "NN102", "%s requires Python %d.%d; the target is Python %d.%d" % (
            name, version[0], version[1], ctx.target[0], ctx.target[1]))
    if findings:
        pos = positions()
        for code, node, message in findings:
            out.node(pos[node], code, message)
    return sorted(out.found, key=lambda d: (d.line, d.col, d.code))


class _Emitter:
    """Turns findings into diagnostics of one file (one per position and code)."""

    def __init__(self, path: str, lines: List[str]):
        self.path = path
        self.lines = lines
        self.found: List[Diagnostic] = []
        self.seen: Set[Tuple[int, int, str]] = set()

    def text(self, line: int) -> str:
        return self.lines[line - 1] if 0 < line <= len(self.lines) else ""

    def add(self, code: str, line: int, col: int, length: int, message: str) -> None:
        if (line, col, code) in self.seen:
            return
        self.seen.add((line, col, code))
        self.found.append(Diagnostic(
            path=self.path, line=line, col=col, code=code, message=message, severity=codes.severity(code),
            hint=codes.hint(code), length=max(1, length), source_line=self.text(line)))

    def node(self, pos, code: str, message: str) -> None:
        start, end = pos.start, pos.end
        stop = end.column if end.line == start.line else len(self.text(start.line))
        self.add(code, start.line, start.column, stop - start.column, message)

    def line(self, line: int, code: str, message: str) -> None:
        text = self.text(line)
        indent = len(text) - len(text.lstrip())
        self.add(code, line, indent, len(text.strip()), message)


def _dotted(node: Union[cst.BaseExpression, None]) -> str:
    """``"a.b.c"`` for a Name/Attribute chain, ``""`` for anything else."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        inner = _dotted(node.value)
        return inner + "." + node.attr.value if inner else ""
    return ""


def _is_type_checking(test: cst.BaseExpression) -> bool:
    return (isinstance(test, cst.Name) and test.value == "TYPE_CHECKING") or (
        isinstance(test, cst.Attribute) and test.attr.value == "TYPE_CHECKING")


def _catches_import_error(handler_type: Optional[cst.BaseExpression]) -> bool:
    """Whether ``except <handler_type>:`` catches a failed import (bare ``except:`` does)."""
    if handler_type is None:
        return True
    if isinstance(handler_type, cst.Tuple):
        return any(_catches_import_error(e.value) for e in handler_type.elements)
    name = _dotted(handler_type).rpartition(".")[2]
    return name in unresolved.IMPORT_GUARDS


_REPORTED_BUILTINS = rules.INTERACTIVE_BUILTINS | rules.NAMESPACE_BUILTINS


def _attribute_trick(call: cst.Call) -> Optional[str]:
    """The attribute name of ``f(x, "name", ...)`` if it is a dunder or refused name."""
    if len(call.args) < 2 or not isinstance(call.args[1].value, cst.SimpleString):
        return None
    try:
        attr = call.args[1].value.evaluated_value
    except Exception:
        return None
    if not isinstance(attr, str):
        return None
    return attr if access.is_dunder(attr) or access.attribute_class(attr) == access.REFUSED else None


def _plain_pattern(pattern: cst.CSTNode) -> bool:
    """A capture, a wildcard, a literal, or an alternative of those (no attribute reads below)."""
    if isinstance(pattern, cst.MatchAs):
        return pattern.pattern is None or _plain_pattern(pattern.pattern)
    if isinstance(pattern, cst.MatchOr):
        return all(_plain_pattern(p.pattern) for p in pattern.patterns)
    return isinstance(pattern, (cst.MatchValue, cst.MatchSingleton))


class _Scan(cst.CSTVisitor):
    """Pass 1: import findings, the file's import aliases, and candidates for pass 2."""

    def __init__(self, ctx: SourceContext):
        super().__init__()
        self.ctx = ctx
        self.findings: List[Finding] = []
        self.reported: Set[str] = set()  # modules whose import is already reported
        self.aliases: Dict[str, Set[str]] = {}  # bound name -> dotted names it may import
        self.type_checking = 0
        self.import_guarded = 0  # inside ``try:`` bodies whose handlers catch ImportError
        self.nested = 0  # inside def, class or with: code that may run on the server
        self.not_names: Set[int] = set()  # ids of Names that are attribute or keyword names
        self.names: List[cst.Name] = []
        self.attributes: List[cst.Attribute] = []
        self.calls: List[cst.Call] = []
        self.stores: List[cst.Attribute] = []  # attribute assignment / deletion targets
        self.interesting = _REPORTED_BUILTINS | frozenset(server.dangerous_builtins())

    def finding(self, code: str, node: cst.CSTNode, message: str) -> None:
        self.findings.append((code, node, message))

    # -- imports -------------------------------------------------------------------------

    def visit_If(self, node: cst.If) -> Optional[bool]:
        if not _is_type_checking(node.test):
            return True
        node.test.visit(self)
        self.type_checking += 1
        node.body.visit(self)
        self.type_checking -= 1
        if node.orelse is not None:
            node.orelse.visit(self)
        return False

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.nested += 1
        self._native(node.name)  # ``def __array_interface__``: one visitor method per node type

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.nested -= 1

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self.nested += 1

    def leave_ClassDef(self, node: cst.ClassDef) -> None:
        self.nested -= 1

    def visit_With(self, node: cst.With) -> None:
        self.nested += 1

    def leave_With(self, node: cst.With) -> None:
        self.nested -= 1

    def visit_Try(self, node: cst.Try) -> Optional[bool]:
        if not any(_catches_import_error(h.type) for h in node.handlers):
            return True
        self.import_guarded += 1
        node.body.visit(self)
        self.import_guarded -= 1
        for part in (*node.handlers, node.orelse, node.finalbody):
            if part is not None:
                part.visit(self)
        return False

    def visit_Import(self, node: cst.Import) -> bool:
        for alias in node.names:
            name = _dotted(alias.name)
            bound = alias.asname.name.value if alias.asname and isinstance(alias.asname.name, cst.Name) else None
            self.aliases.setdefault(bound or name.split(".", 1)[0], set()).add(name if bound else name.split(".")[0])
            if not self.type_checking:
                self.check_module(name, alias.name)
        return False

    def visit_ImportFrom(self, node: cst.ImportFrom) -> bool:
        module = _dotted(node.module)
        if node.relative:
            if not self.type_checking:
                self.check_relative(len(node.relative), module, node)
            return False
        if not isinstance(node.names, cst.ImportStar):
            for alias in node.names:
                name = _dotted(alias.name)
                bound = alias.asname.name.value if alias.asname and isinstance(alias.asname.name, cst.Name) else name
                self.aliases.setdefault(bound, set()).add(module + "." + name)
        if self.type_checking or module == "__future__":
            return False
        if not self.nested and not isinstance(node.names, cst.ImportStar) and \
                public_homes.public_equivalent(module, [_dotted(a.name) for a in node.names]):
            return False  # ``from _operator import add`` run locally: the value goes as ``operator:add``
        if self.check_module(module, node.module) and not isinstance(node.names, cst.ImportStar):
            for alias in node.names:
                if self.check_module(module + "." + _dotted(alias.name), alias.name, submodule=True):
                    self.check_server_object(module, _dotted(alias.name), alias.name)
        return False

    def check_server_object(self, module: str, attr: str, node: cst.CSTNode) -> None:
        """``from functools import RLock``: an allowed module's object the server cannot name.

        Judged on the object itself, as the closure pass judges it; only for standard-library
        modules the server provides (imported to look: their objects are the same in every
        process of one Python version, and importing them runs no user code).
        """
        if self.ctx.kind(module) != server.SERVER:
            return
        mod = public_homes.stdlib_server_module(module)
        if mod is None or attr not in mod.__dict__:
            return
        found = public_homes.refusal(mod.__dict__[attr], attr)
        if found is not None:
            self.reported.add(module + "." + attr)
            self.finding(found[0], node, found[1])

    def check_module(self, name: str, node: cst.CSTNode, submodule: bool = False) -> bool:
        """Check an import of ``name`` (``from m import name`` when ``submodule``); True if fine."""
        kind = self.ctx.kind(name)
        if kind == server.DANGEROUS:
            self.reported.add(name)
            self.finding("NN201", node, "module '%s' is not available on the server: %s" % (
                name, server.module_reason(name)))
            return False
        if kind == server.INSTALLED and not submodule:
            self.reported.add(name)
            self.finding("NN202", node, "module '%s' is installed here but not provided by the server" % name)
            return False
        if kind == server.USER:
            if not submodule and not self.import_guarded and unresolved.is_unresolved(name, self.ctx.local):
                self.reported.add(name)
                self.finding(unresolved.CODE, node, unresolved.message(name))
                return False
            self.check_extension(name, node)
        elif kind == server.SERVER:
            reason = server.entry_refusal(name)  # the per-module table: torch.load, compiler.policy
            if reason is not None:
                self.reported.add(name)
                self.finding("NN401" if submodule else "NN201", node,
                             "%s'%s' is not available on the server: %s" % (
                                 "" if submodule else "module ", name, reason))
                return False
        return True

    def check_extension(self, name: str, node: cst.CSTNode) -> None:
        if name.split(".", 1)[0] in self.ctx.local and self.ctx.root is not None:
            path = modules.local_module_file(self.ctx.root, name)
        else:
            spec = modules.find_module(name)
            path = None if spec is None or modules.has_source(spec) else (spec.origin or "")
        if path is not None and (not path or modules.is_extension(path)):
            self.finding("NN203", node, "module '%s' is compiled code, not Python source: it cannot be "
                                        "captured by value" % name)

    def check_relative(self, level: int, module: str, node: cst.ImportFrom) -> None:
        if self.ctx.base_dir is None:
            return
        base = self.ctx.base_dir
        for _ in range(level - 1):
            base = os.path.dirname(base)
        targets: List[Tuple[str, cst.CSTNode]] = []
        if module and node.module is not None:
            targets.append((module, node.module))
        if not isinstance(node.names, cst.ImportStar):  # names may be submodules
            targets += [((module + "." if module else "") + _dotted(a.name), a.name) for a in node.names]
        for name, where in targets:
            path = modules.local_module_file(base, name)
            if path is not None and modules.is_extension(path):
                self.finding("NN203", where, "module '%s%s' is compiled code, not Python source: "
                                             "it cannot be captured by value" % ("." * level, name))

    # -- candidates ----------------------------------------------------------------------

    def visit_Arg(self, node: cst.Arg) -> None:
        if node.keyword is not None:
            self.not_names.add(id(node.keyword))

    def visit_Name(self, node: cst.Name) -> None:
        if id(node) not in self.not_names:
            self.names.append(node)

    def visit_Attribute(self, node: cst.Attribute) -> None:
        self.not_names.add(id(node.attr))
        if access.attribute_class(node.attr.value) == access.REFUSED:
            self.finding("NN402", node.attr, "attribute '%s' is not available on the server: %s" % (
                node.attr.value, access.attribute_reason(node.attr.value)))
        if isinstance(node.value, (cst.Name, cst.Attribute)):
            self.attributes.append(node)

    def _native(self, node: cst.Name) -> None:
        if node.value in access.NATIVE_PROTOCOLS:
            self.finding("NN402", node, "'%s' cannot be defined on the server: %s" % (
                node.value, access.NATIVE_PROTOCOLS[node.value]))

    def _store(self, target: cst.BaseExpression) -> None:
        if isinstance(target, cst.Name):
            self._native(target)
        if isinstance(target, cst.Attribute) and isinstance(target.value, (cst.Name, cst.Attribute)):
            self.stores.append(target)
        elif isinstance(target, (cst.Tuple, cst.List)):
            for element in target.elements:
                self._store(element.value)

    def visit_AssignTarget(self, node: cst.AssignTarget) -> None:
        self._store(node.target)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self._store(node.target)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._store(node.target)

    def visit_Del(self, node: cst.Del) -> None:
        self._store(node.target)

    def visit_MatchClass(self, node: cst.MatchClass) -> None:
        """The interpreter reads a class pattern's keyword attributes itself, past the server's guards."""
        for element in node.kwds:
            name = element.key.value
            if access.attribute_class(name) != access.PUBLIC:
                self.finding("NN402", element.key, "a class pattern cannot read attribute '%s' on the server "
                                                   "(patterns read attributes past the server's checks)" % name)
            elif not _plain_pattern(element.pattern):
                self.finding("NN402", element.pattern, "a class pattern cannot match a pattern inside attribute "
                                                       "'%s' on the server: capture it and match it separately"
                             % name)

    def visit_Call(self, node: cst.Call) -> None:
        if _attribute_trick(node) is not None:
            self.calls.append(node)
        elif isinstance(node.func, cst.Name) and node.func.value == "type" and len(node.args) == 3:
            self.calls.append(node)

    # -- after the walk: which candidates may be real -----------------------------------------

    def possible(self, dotted: str) -> Set[str]:
        """Qualified names ``dotted`` may have, judging by the file's imports only."""
        root, _, rest = dotted.partition(".")
        out = {base + "." + rest if rest else base for base in self.aliases.get(root, ())}
        out.add("builtins." + dotted)  # unless a local binding shadows it (pass 2 decides)
        return out

    def builtin_candidate(self, dotted: str, names: FrozenSet[str]) -> bool:
        return any(q.startswith("builtins.") and q[9:] in names for q in self.possible(dotted))


def _candidates(scan: _Scan, ctx: SourceContext) -> List[Tuple[str, cst.CSTNode]]:
    """``(what, node)`` pairs that pass 2 must confirm; empty for most clean files."""
    out: List[Tuple[str, cst.CSTNode]] = []
    for node in scan.names:
        if access.reserved_name(node.value) and node.value != "__import__":
            out.append(("__builtins__", node))
        elif scan.builtin_candidate(node.value, scan.interesting):
            out.append(("builtin", node))
    for node in scan.attributes:
        dotted = _dotted(node)
        if dotted and (scan.builtin_candidate(dotted, scan.interesting)
                       or any(_reaches_refused(q, scan, ctx) for q in scan.possible(dotted))):
            out.append(("attribute", node))
    for node in scan.calls:
        dotted = _dotted(node.func)
        if dotted and scan.builtin_candidate(dotted, rules.ATTR_BUILTINS | {"type"}):
            out.append(("call", node))
    for node in scan.stores:
        dotted = _dotted(node.value)
        if dotted and any(scan.ctx.kind(q) not in (server.USER,) for q in scan.possible(dotted)
                          if not q.startswith("builtins.")):
            out.append(("store", node))
    return out


def _refusal(name: str, ctx: SourceContext) -> Optional[str]:
    """Why the server refuses dotted ``name`` (a module or an entry of an allowed module), or None."""
    if ctx.kind(name.split(".", 1)[0]) == server.USER:
        return None
    if ctx.kind(name) == server.DANGEROUS:
        return server.module_reason(name)
    return server.entry_refusal(name)


def _reaches_refused(name: str, scan: _Scan, ctx: SourceContext) -> bool:
    """Whether ``name`` is refused but reached through an allowed module, not yet reported."""
    if "." not in name or name.startswith(("builtins.", ".")):
        return False
    if any(name == r or name.startswith(r + ".") for r in scan.reported):
        return False
    return _refusal(name, ctx) is not None and _refusal(name.rsplit(".", 1)[0], ctx) is None


def _confirm(candidates: List[Tuple[str, cst.CSTNode]], scopes, scan: _Scan, ctx: SourceContext) -> List[Finding]:
    """Pass 2: resolve the candidates with libcst's scope analysis."""
    out: List[Finding] = []
    dangerous = server.dangerous_builtins()

    def qnames(node: cst.CSTNode) -> Set[str]:
        scope = scopes.get(node)
        if scope is None:
            return set()
        return {q.name for q in scope.get_qualified_names_for(node) if q.source in _SCOPE_SOURCES}

    def builtin(name: str, node: cst.CSTNode) -> None:
        if name in rules.INTERACTIVE_BUILTINS:
            out.append(("NN302", node, "'%s()' needs a terminal: it works locally but not remotely" % name))
        elif name in dangerous:
            out.append(("NN301", node, "builtin '%s' is not available on the server: it %s" % (name, dangerous[name])))
        elif name in rules.NAMESPACE_BUILTINS:
            out.append(("NN303", node, "'%s()' does not show your module's namespace when run remotely" % name))

    for what, node in candidates:
        if what == "__builtins__":
            out.append(("NN402", node, "the name '%s' is not available on the server: the server blocks "
                                       "interpreter internals" % node.value))
        elif what == "builtin":
            for q in qnames(node):
                if q.startswith("builtins."):
                    builtin(q[9:], node)
        elif what == "attribute":
            for q in qnames(node):
                if q.startswith("builtins."):
                    builtin(q[9:], node)
                elif _reaches_refused(q, scan, ctx):
                    scan.reported.add(q)
                    last = q.rsplit(".", 1)[1]
                    if access.attribute_class(last) == access.PRIVATE:
                        out.append(("NN402", node, "private attribute '%s' of server module '%s' is not "
                                                   "available to a request" % (last, q.rsplit(".", 1)[0])))
                    else:
                        out.append(("NN401", node, "'%s' is not available on the server: %s" % (
                            q, _refusal(q, ctx))))
        elif what == "store":
            assert isinstance(node, cst.Attribute)
            for q in qnames(node.value):
                if not q.startswith("builtins.") and ctx.kind(q.split(".", 1)[0]) == server.SERVER:
                    out.append(("NN404", node, "cannot assign or delete %s.%s: the server's modules are "
                                               "shared by every request, so a request cannot change them"
                                % (q, node.attr.value)))
                    break
        else:
            assert isinstance(node, cst.Call)
            fn = next((q[9:] for q in qnames(node.func) if q.startswith("builtins.")), None)
            if fn == "type":
                if len(node.args) == 3:
                    out.append(("NN403", node, "type() with three arguments builds a class past the "
                                               "server's checks: write a class statement instead"))
                continue
            attr = _attribute_trick(node)
            if fn not in rules.ATTR_BUILTINS or attr is None:
                continue
            refused = access.attribute_class(attr) == access.REFUSED
            if fn in ("getattr", "hasattr") and not refused:
                continue  # a safe dunder read (hasattr(x, "__iter__")) is fine
            out.append(("NN403", node.args[1].value,
                        "%s() with the name %r: %s" % (
                            fn, attr, "attribute %r is not available on the server: %s" % (
                                attr, access.attribute_reason(attr)) if refused else
                            "special attributes of the server's objects cannot be changed")))
    return out
