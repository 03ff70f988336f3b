"""compiler.frontend.dedent: unit sources keep their meaning and their line numbers."""
import contextlib
import textwrap

import pytest

from compiler.frontend import lower
from compiler.frontend.dedent import indent_source


def _values(code):
    ns = {"ctx": contextlib.nullcontext()}
    exec(compile(code, "t.py", "exec"), ns)
    return _plain(ns)


def _plain(ns):
    return {k: v for k, v in ns.items() if not k.startswith("__") and k != "ctx" and not callable(v)}


def check(src, lineno=None):
    """Lower the with-block of ``src`` and check its unit runs like the original."""
    if lineno is None:
        lineno = next(i for i, line in enumerate(src.splitlines(), 1) if "with ctx" in line)
    program = lower(src, "t.py", lineno)
    unit = program.root
    expected = _values(src)
    assert _values(unit.source) == expected
    # re-indented (as the runtime may do to wrap it in a function) it still means the same
    wrapped = "def __unit__():\n" + indent_source(unit.source, "    ") + "    return dict(locals())\n"
    ns = {}
    exec(compile(wrapped, "t.py", "exec"), ns)
    assert _plain(ns["__unit__"]()) == expected
    # line i of the unit is user line loc.line + i - 1
    lines = src.splitlines()
    for i, line in enumerate(unit.source.splitlines()):
        assert line.strip() == "" or line.strip() in lines[unit.loc.line - 1 + i]
    return unit


def test_triple_quoted_string_less_indented():
    src = 'if True:\n    with ctx:\n        s = """\nflush left\n  two\n        body indent\n"""\n        t = 1\n'
    unit = check(src)
    assert unit.source == 's = """\nflush left\n  two\n        body indent\n"""\nt = 1\n'


def test_string_lines_starting_with_body_indent_are_kept():
    src = textwrap.dedent(
        '''\
        def f():
            with ctx:
                s = """
                indented like the body
                """
                u = f"""{1 +
                    2}
                text"""
                return s, u
        s, u = f()
        '''
    )
    program = lower(src, "t.py", 2)
    assert program.root.source == (
        's = """\n        indented like the body\n        """\n'
        'u = f"""{1 +\n            2}\n        text"""\nreturn s, u\n'
    )


def test_backslash_continued_string():
    src = 'if 1:\n    with ctx:\n        s = "abc\\\ndef"\n        n = len(s)\n'
    unit = check(src)
    assert unit.source == 's = "abc\\\ndef"\nn = len(s)\n'


def test_continuation_lines_less_indented():
    src = textwrap.dedent(
        """\
        if True:
            with ctx:
                x = (1 +
          2)
                y = [
        3,
                ]
                z = 1 + \\
          4
        """
    )
    unit = check(src)
    assert unit.source == "x = (1 +\n  2)\ny = [\n3,\n]\nz = 1 + \\\n  4\n"


def test_comments_and_blank_lines_inside():
    src = "if 1:\n    with ctx:\n        a = 1\n\n# flush comment\n          # deep comment\n        b = a\n"
    unit = check(src)
    assert unit.source == "a = 1\n\n# flush comment\n  # deep comment\nb = a\n"


def test_tabs():
    src = "if 1:\n\twith ctx:\n\t\ta = 1\n\t\tif a:\n\t\t\tb = 2\n"
    unit = check(src)
    assert unit.source == "a = 1\nif a:\n\tb = 2\n"
    assert unit.loc.col == 2


def test_crlf_line_endings():
    src = "with ctx:\r\n    a = 1\r\n    b = '''x\r\ny'''\r\n"
    program = lower(src, "t.py", 1)
    assert program.root.source == "a = 1\nb = '''x\ny'''\n"
    compile(program.root.source, "t.py", "exec")


def test_one_line_body_with_continuation():
    src = "with ctx: a = (1,\n  2); b = a\n"
    unit = check(src)
    assert unit.source == "a = (1,\n  2); b = a\n"
    assert unit.loc.col == 10


@pytest.mark.parametrize(
    "src",
    [
        "with ctx:\n    pass\n",
        "with ctx:\n    x = 1  # trailing\n    # footer\n",
        "while True:\n    with ctx:\n        x = 1\n    break\n",
        "with ctx:\n    def f(\n  a,\n    ):\n        return a\n    r = f(2)\n",
        'with ctx:\n    x = f"""{\n1}"""\n',
    ],
)
def test_units_compile(src):
    check(src)
