"""Find and cut the source of live functions, lambdas, classes and module statements.

Sources come from ``linecache`` (files, zip imports, IPython cells, anything
registered there) or, for ``python -c``, from the command line. A file is
parsed once with :mod:`ast` (cached while its linecache entry is unchanged).

Cutting rules (:func:`cut`): the snippet runs from a start position to the
end of a node; its first line starts at the start column, the following lines
lose the first line's indentation prefix when they have it, and lines that
begin inside a multi-line string are kept byte for byte. So snippet line ``i``
is file line ``loc.line + i - 1``. ``ast`` columns are UTF-8 byte offsets;
they are turned into character columns here.
"""
from __future__ import annotations

import ast
import inspect
import linecache
import sys
import types
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)


class FileText:
    """The lines of one source file, its AST and the lines that begin inside strings."""

    def __init__(self, filename: str, lines: Sequence[str]):
        self.filename = filename
        self.lines = [line.rstrip("\r\n") for line in lines]
        self._tree: Any = None
        self._parsed = False
        self._verbatim: Optional[Set[int]] = None

    @property
    def tree(self) -> Optional[ast.Module]:
        if not self._parsed:
            self._parsed = True
            try:
                self._tree = ast.parse("\n".join(self.lines) + "\n", self.filename)
            except (SyntaxError, ValueError):
                self._tree = None
        return self._tree

    def line(self, n: int) -> str:
        """Line ``n`` (1-based) without its end of line; "" outside the file."""
        return self.lines[n - 1] if 1 <= n <= len(self.lines) else ""

    def char_col(self, n: int, byte_col: int) -> int:
        """The character column of byte offset ``byte_col`` in line ``n``."""
        text = self.line(n)
        if text.isascii():
            return byte_col
        return len(text.encode("utf-8")[:byte_col].decode("utf-8", "replace"))

    @property
    def verbatim(self) -> Set[int]:
        """Lines that begin inside a multi-line string literal."""
        if self._verbatim is None:
            out: Set[int] = set()
            tree = self.tree
            if tree is not None:
                for node in ast.walk(tree):
                    if isinstance(node, (ast.Constant, ast.JoinedStr)) and \
                            getattr(node, "end_lineno", node.lineno) > node.lineno and \
                            (isinstance(node, ast.JoinedStr) or isinstance(node.value, (str, bytes))):
                        out.update(range(node.lineno + 1, node.end_lineno + 1))
            self._verbatim = out
        return self._verbatim


_files: Dict[str, Tuple[int, FileText]] = {}


def file_text(filename: str, module_globals: Optional[dict] = None) -> Optional[FileText]:
    """The source of ``filename`` as the interpreter sees it, or None when there is none."""
    try:
        lines = linecache.getlines(filename, module_globals)
    except Exception:
        lines = []
    if not lines and filename == "<string>":
        lines = _command_line_lines()
    if not lines:
        return None
    key = id(lines) if lines is linecache.cache.get(filename, (None, None, None))[2] else hash(tuple(lines))
    cached = _files.get(filename)
    if cached is not None and cached[0] == key:
        return cached[1]
    ft = FileText(filename, lines)
    _files[filename] = (key, ft)
    return ft


def _command_line_lines() -> List[str]:
    try:
        from ..frontend.capture import _command_line_source

        text = _command_line_source([])
    except Exception:
        text = None
    return text.splitlines(True) if text else []


# -- cutting -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snippet:
    """A piece of a file: its dedented source and where it starts (1-based line, char column)."""

    source: str
    filename: str
    line: int
    col: int


def cut(ft: FileText, start_line: int, start_byte_col: int, end_line: int, end_byte_col: int) -> Snippet:
    """The text from a start position to an end position (ast coordinates), dedented."""
    col = ft.char_col(start_line, start_byte_col)
    end_col = ft.char_col(end_line, end_byte_col)
    indent = ft.line(start_line)[:col]
    out: List[str] = []
    for n in range(start_line, end_line + 1):
        text = ft.line(n)
        if n == end_line:
            text = text[:end_col]
        if n == start_line:
            text = text[col:]
        elif n not in ft.verbatim:
            if indent and text.startswith(indent):
                text = text[len(indent):]
            elif not text.strip():
                text = ""
        out.append(text)
    return Snippet("\n".join(out) + "\n", ft.filename, start_line, col)


def statement_start(node: ast.AST) -> Tuple[int, int]:
    """(line, byte col) where a statement starts, decorators included."""
    decorators = getattr(node, "decorator_list", None)
    line = min([node.lineno] + [d.lineno for d in decorators]) if decorators else node.lineno
    return line, node.col_offset


def cut_statement(ft: FileText, node: ast.AST, decorators: bool = True) -> Snippet:
    line, col = statement_start(node) if decorators else (node.lineno, node.col_offset)
    return cut(ft, line, col, node.end_lineno, node.end_col_offset)


def cut_expression(ft: FileText, node: ast.AST) -> Snippet:
    return cut(ft, node.lineno, node.col_offset, node.end_lineno, node.end_col_offset)


# -- finding nodes -----------------------------------------------------------------------------


def _walk_scopes(body: Sequence[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements of a block, and of the compound statements in it, but not of nested defs/classes."""
    for stmt in body:
        yield stmt
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            sub = getattr(stmt, field, None)
            if sub and not isinstance(stmt, _FUNCS + (ast.ClassDef,)):
                for item in sub:
                    if isinstance(item, ast.stmt):
                        yield from _walk_scopes([item])
                    else:  # except handlers, match cases
                        yield from _walk_scopes(getattr(item, "body", []))


def _arg_names(args: ast.arguments) -> List[str]:
    names = [a.arg for a in list(args.posonlyargs) + list(args.args)]
    names += [a.arg for a in args.kwonlyargs]
    if args.vararg is not None:
        names.append(args.vararg.arg)
    if args.kwarg is not None:
        names.append(args.kwarg.arg)
    return names


def _code_arg_names(code: types.CodeType) -> List[str]:
    n = code.co_argcount + code.co_kwonlyargcount
    n += bool(code.co_flags & inspect.CO_VARARGS) + bool(code.co_flags & inspect.CO_VARKEYWORDS)
    return list(code.co_varnames[:n])


def _positions(code: types.CodeType) -> List[Tuple[int, int, int, int]]:
    get = getattr(code, "co_positions", None)  # 3.11+
    if get is None:
        return []
    return [p for p in get() if None not in p]


def _bounding_box(code: types.CodeType) -> Optional[Tuple[int, int, int, int]]:
    """(line, col, end line, end col) covering the code's instructions (3.11+), else None."""
    spans = [p for p in _positions(code) if not (p[2] == 0 and p[3] == 0)]
    if not spans:
        return None
    start = min((p[0], p[2]) for p in spans)
    end = max((p[1], p[3]) for p in spans)
    return start[0], start[1], end[0], end[1]


def _compiles_to(source: str, code: types.CodeType) -> bool:
    """Does lambda ``source``, compiled with ``code``'s free variables, give ``code``'s bytecode?"""
    cells = "".join("    %s = None\n" % v for v in code.co_freevars)
    text = "def _outer():\n%s    return (\n%s)\n" % (cells, source.rstrip("\n"))
    try:
        module = compile(text, "<lambda>", "exec")
    except SyntaxError:
        return False
    outer = next((c for c in module.co_consts if isinstance(c, types.CodeType)), None)
    inner = next((c for c in outer.co_consts if isinstance(c, types.CodeType)), None) if outer else None
    return inner is not None and _same_code(code, inner)


def _same_code(code: types.CodeType, candidate: types.CodeType) -> bool:
    consts = lambda c: tuple(x for x in c.co_consts if not isinstance(x, types.CodeType))  # noqa: E731
    return (candidate.co_code == code.co_code and candidate.co_names == code.co_names
            and consts(candidate) == consts(code))


def find_function(ft: FileText, code: types.CodeType) -> Optional[ast.AST]:
    """The def or lambda node of ``code`` in its file (several lambdas on a line are told apart)."""
    tree = ft.tree
    if tree is None:
        return None
    line = code.co_firstlineno
    if code.co_name == "<lambda>":
        found = [n for n in ast.walk(tree) if isinstance(n, ast.Lambda) and n.lineno == line]
    else:
        found = [n for n in ast.walk(tree) if isinstance(n, _FUNCS) and n.name == code.co_name
                 and line in (n.lineno, statement_start(n)[0])]
    if len(found) > 1:
        names = _code_arg_names(code)
        found = [n for n in found if _arg_names(n.args) == names] or found
    if len(found) > 1 and code.co_name == "<lambda>":
        box = _bounding_box(code)
        if box is not None:
            exact = [n for n in found if (n.body.lineno, n.body.col_offset, n.body.end_lineno,
                                          n.body.end_col_offset) == box]
            found = exact or found
    if len(found) > 1 and code.co_name == "<lambda>":  # before 3.11: compare the bytecode
        same = [n for n in found if _compiles_to(cut_expression(ft, n).source, code)]
        found = same or found
    return found[0] if found else None


def class_file(cls: type) -> Optional[str]:
    """The file a class was defined in: its methods' file, else its module's."""
    generated = None
    for value in vars(cls).values():
        fn = _function_of(value)
        if fn is not None and fn.__qualname__.startswith(cls.__qualname__ + "."):
            filename = fn.__code__.co_filename
            if not filename.startswith("<") or filename.startswith("<ipython-input"):
                return filename
            generated = generated or filename  # e.g. a dataclass's generated __init__
    module = sys.modules.get(cls.__module__)
    return getattr(module, "__file__", None) or generated


def _function_of(value: Any) -> Optional[types.FunctionType]:
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    elif isinstance(value, property):
        value = value.fget
    value = inspect.unwrap(value) if callable(value) else value
    return value if isinstance(value, types.FunctionType) else None


def find_class(ft: FileText, cls: type) -> Optional[ast.ClassDef]:
    """The class statement of ``cls`` (found by qualified name; methods' lines break ties)."""
    tree = ft.tree
    if tree is None:
        return None
    parts = cls.__qualname__.split(".")
    candidates: List[ast.ClassDef] = []

    def search(body: Sequence[ast.stmt], depth: int) -> None:
        for stmt in _walk_scopes(body):
            if isinstance(stmt, ast.ClassDef) and stmt.name == parts[depth]:
                if depth == len(parts) - 1:
                    candidates.append(stmt)
                else:
                    search(stmt.body, depth + 1)

    search(tree.body, 0)
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    first = getattr(cls, "__firstlineno__", None)  # 3.13+
    if first is not None:
        for c in candidates:
            if statement_start(c)[0] == first or c.lineno == first:
                return c
    lines = [fn.__code__.co_firstlineno for fn in map(_function_of, vars(cls).values())
             if fn is not None and fn.__code__.co_filename == ft.filename]
    for c in candidates:
        if any(c.lineno <= n <= c.end_lineno for n in lines):
            return c
    return candidates[-1]


def find_binding_statement(ft: FileText, name: str) -> Optional[ast.stmt]:
    """The last module-level statement of ``ft`` binding ``name`` (def, class or assignment)."""
    tree = ft.tree
    if tree is None:
        return None
    found = None
    for stmt in _walk_scopes(tree.body):
        if isinstance(stmt, _FUNCS + (ast.ClassDef,)) and stmt.name == name:
            found = stmt
        elif isinstance(stmt, ast.Assign) and any(name in _target_names(t) for t in stmt.targets):
            found = stmt
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None and name in _target_names(stmt.target):
            found = stmt
    return found


def function_statements(ft: FileText, name: str) -> List[ast.stmt]:
    """Every module-level def of ``name`` in ``ft``."""
    tree = ft.tree
    if tree is None:
        return []
    return [s for s in _walk_scopes(tree.body) if isinstance(s, _FUNCS) and s.name == name]


def _target_names(target: ast.AST) -> List[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        out: List[str] = []
        for el in target.elts:
            out += _target_names(el.value if isinstance(el, ast.Starred) else el)
        return out
    return []
