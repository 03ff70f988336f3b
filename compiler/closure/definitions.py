"""User code by value: module-level statements (DEF_STATEMENT) and other functions (DEF_LOCAL).

A mixin of :class:`compiler.closure.capture.Closer`: finding a captured
object's source, cutting it out, and recording it as a Definition whose reads
and imports are closed over in turn.
"""
from __future__ import annotations

import inspect
import types
from typing import TYPE_CHECKING, Any, List, Optional

from ..ir.nodes import BIND_CLASS, BIND_FUNCTION, DEF_LOCAL, Binding, Definition, SourceLoc
from . import sources
from .errors import CaptureRejected, Where
from .scan import analyze

if TYPE_CHECKING:  # annotations only
    from .capture import _Module


def unwrap(fn: Any) -> Any:
    try:
        return inspect.unwrap(fn)
    except ValueError:  # a __wrapped__ cycle
        return fn


def clean_qualname(qual: str) -> str:
    parts = [p.strip("<>") for p in qual.split(".") if p != "<locals>"]
    parts = [p if p.isidentifier() else "_" for p in parts]
    return ".".join(parts) or "lambda"


class DefinitionCapture:
    """Definitions of user code (needs the Closer's ``keys``, ``defs``, ``capture``, ``reject``...)."""

    def _is_statement(self, info: _Module, name: str, obj: Any) -> bool:
        """Is ``obj`` what module ``info``'s statement binding ``name`` creates?

        A def of that name (decorated or not), a function of the module without
        closure bound by an assignment (``act = lambda x: ...``), or another
        object made by the module (``P = namedtuple(...)``, ``@lru_cache``).
        Closures made by a call keep their live state instead (DEF_LOCAL).
        """
        if not name or info.namespace.get(name) is not obj:
            return False
        inner = unwrap(obj)
        if isinstance(inner, types.FunctionType):
            if inner.__globals__ is not info.namespace:
                return False  # imported from elsewhere
            return inner.__name__ == name or inner.__closure__ is None
        return getattr(obj, "__module__", None) == info.name

    def _statement_file(self, info: _Module, obj: Any) -> Optional[sources.FileText]:
        inner = unwrap(obj)
        filename = None
        if isinstance(inner, types.FunctionType) and inner.__globals__ is info.namespace:
            filename = inner.__code__.co_filename
        elif isinstance(obj, type):
            filename = sources.class_file(obj)
        if filename is None:
            filename = info.namespace.get("__file__")
        if not isinstance(filename, str):
            return None
        return sources.file_text(filename, info.namespace)

    def _statement(self, info: _Module, name: str, obj: Any, where: Where) -> Optional[int]:
        """DEF_STATEMENT for module global ``name`` of ``info`` (None if it has no statement)."""
        key = ("stmt", info.name, name)
        if key in self.keys:
            return self.keys[key]
        ft = self._statement_file(info, obj)
        if ft is None:
            return None
        node = None
        inner = unwrap(obj)
        if isinstance(obj, type):
            node = sources.find_class(ft, obj) if obj.__qualname__ == name else None
        if node is None and isinstance(inner, types.FunctionType) and inner.__code__.co_filename == ft.filename:
            line = inner.__code__.co_firstlineno
            for stmt in sources.function_statements(ft, name):
                if stmt.lineno <= line <= stmt.end_lineno or sources.statement_start(stmt)[0] == line:
                    node = stmt
        if node is None:
            node = sources.find_binding_statement(ft, name)
        if node is None:
            return None
        snippet = sources.cut_statement(ft, node)
        source, line = snippet.source, snippet.line
        lazy = info.lazy_annotations
        if lazy:
            source, line = "from __future__ import annotations\n" + source, line - 1
        try:
            facts = analyze(snippet.source, lazy_annotations=lazy)
        except Exception:
            raise self.reject("NN502", where, "the source of '%s' (%s:%d) does not parse on its own" % (
                name, ft.filename, snippet.line))
        index = self._reserve(key, obj)
        loc = SourceLoc(ft.filename, max(line, 1), snippet.col)
        self.defs[index] = Definition(name=name, module=info.name, source=source, loc=loc)
        info.entries[name] = Binding(name, BIND_CLASS if isinstance(obj, type) else BIND_FUNCTION, index)
        base = Where(SourceLoc(ft.filename, snippet.line, snippet.col), snippet.source, facts=facts,
                     context="in %s.%s" % (info.name, name))
        self._reads(info, facts, base, ())
        self._imports(facts, info.package, base, info)
        return index

    def _local(self, fn: types.FunctionType, info: _Module, where: Where) -> int:
        """DEF_LOCAL for a function that is not a module-level statement (closure, lambda, ...)."""
        key = ("local", id(fn))
        if key in self.keys:
            return self.keys[key]
        code = fn.__code__
        ft = sources.file_text(code.co_filename, fn.__globals__)
        node = sources.find_function(ft, code) if ft is not None else None
        if node is None:
            raise self.reject("NN502", where, "cannot find the source of function '%s' (defined in %s, line %d)" % (
                fn.__qualname__, code.co_filename, code.co_firstlineno))
        is_lambda = code.co_name == "<lambda>"
        snippet = sources.cut_expression(ft, node) if is_lambda else sources.cut_statement(ft, node, decorators=False)
        try:
            facts = analyze(snippet.source, expression=is_lambda, lazy_annotations=True)
        except Exception:
            raise self.reject("NN502", where, "the source of '%s' (%s:%d) does not parse on its own" % (
                fn.__qualname__, ft.filename, snippet.line))
        index = self._reserve(key, fn)
        base = Where(SourceLoc(ft.filename, snippet.line, snippet.col), snippet.source, facts=facts,
                     context="in %s" % fn.__qualname__)
        cells: List[Binding] = []
        for name, cell in zip(code.co_freevars, fn.__closure__ or ()):
            try:
                content = cell.cell_contents
            except ValueError:  # an empty cell stays empty
                continue
            try:
                cells.append(self.capture(name, content, base.at(name)))
            except CaptureRejected:
                pass
        attrs: List[Binding] = []
        extra = [("__defaults__", fn.__defaults__), ("__kwdefaults__", fn.__kwdefaults__)]
        extra += [(k, v) for k, v in vars(fn).items() if not (k.startswith("__") and k.endswith("__"))]
        for name, value in extra:
            if value is None:
                continue
            try:
                attrs.append(self.capture(name, value, base.at("", base.pos)))
            except CaptureRejected:
                pass
        self.defs[index] = Definition(
            name=clean_qualname(fn.__qualname__), module=info.name, source=snippet.source,
            loc=SourceLoc(ft.filename, snippet.line, snippet.col), kind=DEF_LOCAL,
            cells=tuple(cells), attrs=tuple(attrs))
        self._reads(info, facts, base, code.co_freevars)
        self._imports(facts, info.package, base, info)
        return index
