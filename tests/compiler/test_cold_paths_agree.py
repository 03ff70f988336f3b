"""The shortcuts of the cold (first trace at a call site) path give what the slow paths give.

* ``fastpath``: parsing only the with-statement at the line (a chunk found from the
  indentation) lowers to the same program as parsing the whole file;
* ``fastpath.lower_with_accesses``: the access report computed on the lowering's own parse
  equals the fast scanner run on the root unit's cut-out source (every trace call site of
  this repository's tests and benchmarks);
* ``runtime.builder``: units compiled from positioned text have the same code and positions
  as units built through the AST, and ``does_nothing`` agrees with the AST rule it replaced;
* ``runtime.skip.store_at`` and ``generation._next_opens_with`` read the raw bytecode the way
  ``dis`` does.
"""
import ast
import dis
import glob
import os

import pytest

from compiler.frontend import fastpath
from compiler.frontend.fast_accesses import try_scan

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCES = sorted(glob.glob(os.path.join(ROOT, "tests", "**", "*.py"), recursive=True)
                 + glob.glob(os.path.join(ROOT, "benchmarks", "*.py")))


def _trace_sites():
    """``(path, text, line)`` of every with-statement line that opens a trace, generate,
    session or invoke (real statements only: not examples inside string literals)."""
    for path in SOURCES:
        text = open(path, encoding="utf-8").read()
        try:
            tree = ast.parse(text)
        except SyntaxError:  # syntax of a newer Python (cross-version fixtures)
            continue
        heads = {node.lineno for node in ast.walk(tree) if isinstance(node, (ast.With, ast.AsyncWith))}
        for i, line in enumerate(text.splitlines(), 1):
            if i in heads and any(m in line for m in (".trace(", ".generate(", ".session(", ".invoke(")):
                yield path, text, i


def test_report_from_the_lowering_parse_equals_the_unit_scan():
    compared = 0
    for path, text, line in _trace_sites():
        try:
            program, report = fastpath._lower(text, path, line, 1, accesses=True)
        except Exception:
            continue  # the fast path declines: the libcst path runs, and the report is scanned later
        assert report == try_scan([program.units[0].source]), (path, line)
        compared += 1
    assert compared > 200


def test_both_lowerings_record_the_same_access_facts():
    """The IR's envoys, dynamic flag, dynamic names and unit facts are the same from the ast fast
    path and from libcst (a sample of this repository's trace call sites: libcst is slow)."""
    from compiler.frontend.lower import lower as lower_libcst

    compared = 0
    for k, (path, text, line) in enumerate(_trace_sites()):
        if k % 6:
            continue
        try:
            fast, _ = fastpath._lower(text, path, line, 1, accesses=True)
        except Exception:
            continue
        slow = lower_libcst(text, path, line)
        assert (fast.envoys, fast.dynamic, fast.dynamic_names) == (slow.envoys, slow.dynamic, slow.dynamic_names), (
            path, line)
        assert [(u.facts, u.target) for u in fast.units] == [(u.facts, u.target) for u in slow.units], (path, line)
        compared += 1
    assert compared > 30


def _lower_both(text, path, line):
    """``fastpath._lower`` with and without the with-statement chunk (an exception's type if it raises)."""
    out = []
    for chunks in (True, False):
        fastpath.CHUNKS = chunks
        try:
            out.append(fastpath._lower(text, path, line, 1, accesses=True))
        except Exception as error:
            out.append(type(error))
        finally:
            fastpath.CHUNKS = True
        fastpath._TREES.clear()
    return out


def test_the_with_statement_chunk_lowers_like_the_whole_file():
    compared = 0
    for path, text, line in _trace_sites():
        chunk, whole = _lower_both(text, path, line)
        if isinstance(whole, type):
            continue  # the whole-file fast path declines (the libcst path decides)
        assert chunk == whole, (path, line)
        compared += 1
    assert compared > 200


def _units():
    from runtime.builder import _positioned_text  # noqa: F401  (import check)

    for path, text, line in _trace_sites():
        program = fastpath.try_lower(text, path, line)
        if program is not None:
            for unit in program.units:
                yield program, unit


def _ast_code(program, unit):
    """The unit built the way it was before the text shortcut: parse, shift, compile."""
    import runtime.builder as builder

    saved = builder._positioned_text
    builder._positioned_text = lambda unit: None
    try:
        return builder._build_unit(None, program, unit).code
    finally:
        builder._positioned_text = saved


_JUMPS = set(dis.hasjrel) | set(dis.hasjabs)


def _ops(code):
    """Instructions without NOPs; jump targets (offsets, shifted by a NOP) left out."""
    return [(i.opname, None if i.opcode in _JUMPS else i.argval, i.positions)
            for i in dis.get_instructions(code) if i.opname != "NOP"]


def test_units_from_positioned_text_match_the_ast_build():
    import runtime.builder as builder

    compared = 0
    for program, unit in _units():
        if builder._positioned_text(unit) is None or builder._descendant_headers(program, unit.id):
            continue
        fast = builder._build_unit(None, program, unit).code
        slow = _ast_code(program, unit)
        # the text form has one NOP for the `if 1:` wrapper line; everything else is identical
        fast_ops, slow_ops = _ops(fast), _ops(slow)
        assert fast_ops == slow_ops, (unit.loc, unit.source)
        compared += 1
    assert compared > 200


@pytest.mark.parametrize("body", ["pass", "...", "'doc'", "1\n2", "pass\n'x'", "x = 1", "print()", "[]",
                                  "assert False", "raise", "global q", "f'{x}'", "lambda: 0"])
def test_does_nothing_matches_the_ast_rule(body):
    from runtime.builder import does_nothing

    tree = ast.parse(body)
    by_ast = all(isinstance(s, ast.Pass) or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
                 for s in tree.body)
    code = compile(body, "<t>", "exec")
    if by_ast:
        assert does_nothing(code)
    elif body not in ("[]", "global q"):  # inert either way: running them inline is harmless
        assert not does_nothing(code)


def _code_objects(code):
    yield code
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            yield from _code_objects(const)


def test_store_at_reads_what_dis_reads():
    from runtime.skip import store_at

    checked = 0
    for path in SOURCES[:60]:
        top = compile(open(path, encoding="utf-8").read(), path, "exec")
        for code in _code_objects(top):
            for ins in dis.get_instructions(code):
                got = store_at(code, ins.offset)
                if got is None:
                    continue
                checked += 1
                if ins.opname == "POP_TOP":
                    assert got == ("POP_TOP", None)
                else:
                    assert got == (ins.opname, ins.argval), (path, code.co_name, ins)
    assert checked > 1000


def test_next_opens_with_reads_what_dis_reads():
    from nnsight.tracing.generation import _next_opens_with

    checked = 0
    for path in SOURCES[:60]:
        top = compile(open(path, encoding="utf-8").read(), path, "exec")
        for code in _code_objects(top):
            instructions = list(dis.get_instructions(code))
            for n, ins in enumerate(instructions):
                if not ins.opname.startswith("CALL"):
                    continue
                later = [i for i in instructions[n + 1:] if i.opname not in ("CACHE", "EXTENDED_ARG")]
                expected = bool(later) and later[0].opname in ("BEFORE_WITH", "SETUP_WITH")
                assert _next_opens_with(code, ins.offset) in (expected, None)
                checked += 1
    assert checked > 1000


def test_plain_file_read_equals_linecache(tmp_path):
    import linecache

    from compiler.frontend.capture import _read_plain_file

    samples = {"crlf.py": b"a = 1\r\nb = 2\r\n", "cr.py": b"a = 1\rb = 2", "no_eol.py": b"x = 1",
               "empty.py": b"", "ff.py": b"a = 1\x0c\nb = '\xe2\x80\xa8'\n"}
    paths = SOURCES[:80]
    for name, data in samples.items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    from compiler.frontend.fastpath import _LINE

    for path in paths:
        ours = _read_plain_file(path)
        linecache.cache.pop(path, None)
        assert ours == linecache.getlines(path), path
        # the lowering may take this split as is (CapturedSource.lines): it is the fast path's own
        assert ours == _LINE.findall("".join(ours)), path
    assert _read_plain_file("relative.py") is None
    assert _read_plain_file(str(tmp_path)) is None  # a directory
    (tmp_path / "grow.py").write_bytes(b"a = 1\n" * 50000)  # bigger than one read chunk
    assert _read_plain_file(str(tmp_path / "grow.py")) == ["a = 1\n"] * 50000
    (tmp_path / "latin.py").write_bytes(b"# -*- coding: latin-1 -*-\nx = '\xe9'\n")
    assert _read_plain_file(str(tmp_path / "latin.py")) is None
