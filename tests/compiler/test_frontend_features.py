"""compiler.frontend.features: minimum Python version from syntax."""
import glob
import json
import os
import subprocess
import textwrap

import libcst
import pytest

from compiler.frontend import detect_features, lower
from compiler.frontend.features import features_table

CASES = [
    # (source, min_python, feature names)
    ("x = 1\n", (3, 9), ()),
    ("if (n := 1):\n    pass\n", (3, 9), ()),  # walrus: 3.8, below the floor
    ("def f(a, /, b):\n    pass\n", (3, 9), ()),  # positional-only: 3.8
    ("match x:\n    case 1:\n        pass\n", (3, 10), ("match statement",)),
    ("with (open(a) as f, open(b) as g):\n    pass\n", (3, 10), ("parenthesized context managers",)),
    ("with (a as b):\n    pass\n", (3, 10), ("parenthesized context managers",)),
    ("with (a):\n    pass\n", (3, 9), ()),  # a parenthesized expression
    ("with (a) as b:\n    pass\n", (3, 9), ()),
    ("try:\n    pass\nexcept* ValueError:\n    pass\n", (3, 11), ("except*",)),
    ("x = a[*b]\n", (3, 11), ("star expression in subscript",)),
    ("type A = int\n", (3, 12), ("type alias statement",)),
    ("def f[T](x: T) -> T:\n    return x\n", (3, 12), ("type parameters",)),
    ("class C[T]:\n    pass\n", (3, 12), ("type parameters",)),
    ('x = f"{"a"}"\n', (3, 12), ("f-string nesting (PEP 701)",)),
    ("x = f'{'a'}'\n", (3, 12), ("f-string nesting (PEP 701)",)),
    ('x = f"{"\\n".join(a)}"\n', (3, 12), ("f-string nesting (PEP 701)",)),
    ('x = f"{f"{1}"}"\n', (3, 12), ("f-string nesting (PEP 701)",)),
    ('x = f"{a # comment\n}"\n', (3, 12), ("f-string nesting (PEP 701)",)),
    ("x = f\"{'a'}\"\n", (3, 9), ()),
    ('x = f"{x!r:>{width}}"\n', (3, 9), ()),
    ("x = f'''{\"a\"}'''\n", (3, 9), ()),
    ("x = f'''{\n1}'''\n", (3, 9), ()),
    ("def f[T = int]():\n    pass\n", (3, 13), ("type parameters", "type parameter defaults")),
    ("def f(x: int | None):\n    pass\n", (3, 9), ()),  # X | Y is not syntax
]


@pytest.mark.parametrize("src, version, names", CASES)
def test_detect(src, version, names):
    min_python, features = detect_features(src)
    assert min_python == version
    assert tuple(sorted(n for n, _ in features)) == tuple(sorted(names))


def test_lines_and_module_input():
    src = "a = 1\nmatch a:\n    case 1:\n        pass\nmatch a:\n    case _:\n        pass\ntype X = int\n"
    assert detect_features(libcst.parse_module(src)) == (
        (3, 12),
        (("match statement", 2), ("type alias statement", 8)),
    )


def test_table_is_documented():
    table = dict(features_table())
    assert table["match statement"] == (3, 10) and table["assignment expression"] == (3, 8)


def test_lower_reports_user_lines():
    src = textwrap.dedent(
        """\
        x = 0

        with model.trace(x):
            match x:
                case 0:
                    pass
        """
    )
    header = lower(src, "t.py", 3).header
    assert header.min_python == (3, 10) and header.features == (("match statement", 4),)


def _interpreter(minor):
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.%d.*/bin/python" % minor)))
    return found[-1] if found else None


@pytest.mark.crossversion
def test_versions_agree_with_cpython():
    """Each case compiles on its min_python interpreter and not on the previous one."""
    sources = [src for src, version, _ in CASES if version > (3, 9)]
    script = (
        "import json, sys\nout = []\nfor s in json.loads(sys.stdin.read()):\n"
        "    try:\n        compile(s, 't', 'exec'); out.append(True)\n"
        "    except SyntaxError:\n        out.append(False)\nprint(json.dumps(out))\n"
    )
    results = {}
    for minor in range(9, 14):
        exe = _interpreter(minor)
        if exe is None:
            continue
        proc = subprocess.run([exe, "-c", script], input=json.dumps(sources), capture_output=True, text=True)
        results[minor] = dict(zip(sources, json.loads(proc.stdout)))
    if len(results) < 2:
        pytest.skip("needs several CPython versions under ~/.pyenv")
    for src, (major, minor), _ in CASES:
        if (major, minor) <= (3, 9):
            continue
        if minor in results:
            assert results[minor][src], (src, "should compile on 3.%d" % minor)
        # CPython 3.9's parser already accepted parenthesized context managers
        quirk = minor == 10 and "with (" in src
        if minor - 1 in results and not quirk:
            assert not results[minor - 1][src], (src, "should not compile on 3.%d" % (minor - 1))
