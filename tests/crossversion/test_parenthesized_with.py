"""compiler/passes/lower_parenthesized_with.py: 3.10 parenthesized context managers -> 3.9 form."""
import ast
import glob
import os
import subprocess
import textwrap

import pytest

import xvsupport as xv
from compiler.frontend import detect_features, lower
from compiler.ir import decode
from compiler.passes.lower_parenthesized_with import lower_parenthesized_with

CASES = [
    "with (open(a) as f, open(b) as g):\n    pass\n",
    "with (a as b):\n    pass\n",
    "with (A as a, B): pass\n",
    "with (\n    f(1,  # inner\n      2) as a,  # first\n\n    g() as b,\n):  # kept\n    x = (\n        1)\n",
    "with(A() as a,\n     B() as b  # c\n     ) :\n    with (C as c,):\n        pass\n",
    "async def h():\n    async with (A as a, B as b,):\n        pass\n",
    "if x:\n    with (A as a,\n          B as b):\n        y = 1\nelse:\n    with (C() as c): pass\n",
    "with (A(\n        1) as a, B as b):\n    pass\n",
]


def statements(tree):
    return [(type(n).__name__, n.lineno, n.col_offset) for n in ast.walk(tree) if isinstance(n, ast.stmt)]


@pytest.mark.parametrize("source", CASES)
def test_lowered_code_means_the_same_on_the_same_lines(source):
    lowered, left = lower_parenthesized_with(source)
    assert left == 0
    assert lowered.count("\n") == source.count("\n")
    before, after = ast.parse(source), ast.parse(lowered)
    assert ast.dump(before) == ast.dump(after)  # same program
    assert statements(before) == statements(after)  # every statement where it was
    ast.parse(lowered, feature_version=(3, 8))  # no parenthesized context managers left
    assert detect_features(lowered)[0] == (3, 9)


def test_headers_it_cannot_keep_exact_are_left_alone():
    source = 'with (A(""" x\ny""") as a, B as b):\n    pass\n'
    assert lower_parenthesized_with(source) == (source, 1)
    assert lower_parenthesized_with("with (a):\n    pass\n") == ("with (a):\n    pass\n", 0)
    program = lower("with model.trace(x):\n" + textwrap.indent(source, "    "), "s.py", 1)
    assert program.header.min_python == (3, 10)
    assert program.header.features == (("parenthesized context managers", 2),)


def _python38():
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.8.*/bin/python")))
    return found[-1] if found else None


@pytest.mark.crossversion
def test_lowered_code_compiles_on_a_pre_310_parser():
    """CPython 3.8's LL(1) parser truly rejects the 3.10 form (3.9's PEG parser already took it)."""
    py38 = _python38()
    if py38 is None:
        pytest.skip("CPython 3.8 (pyenv) not installed: the ast feature_version check above still ran")
    check = "import sys; compile(sys.stdin.read(), 't.py', 'exec')"
    for source in CASES:
        lowered, _ = lower_parenthesized_with(source)
        assert subprocess.run([py38, "-c", check], input=source, text=True, capture_output=True).returncode
        proc = subprocess.run([py38, "-c", check], input=lowered, text=True, capture_output=True)
        assert proc.returncode == 0, (lowered, proc.stderr)


SCALE = ("class Scale:\n    def __init__(self, c):\n        self.c = c\n\n    def __enter__(self):\n"
         "        return self.c\n\n    def __exit__(self, *exc):\n        return False\n\n")
PWITH = xv.script(SCALE + "with (\n    Scale(2.0) as a,  # scale\n    Scale(0.5) as b,\n):\n"
                  "    v = (model[0].output * a + b).save()\nwith (Scale(3.0) as c, Scale(1.0)):\n"
                  "    w = (model[2].output * c).save()\n", saved=["v", "w"])
PWITH_INVOKE = xv.script(SCALE + "with (\n    tracer.invoke(x),\n    Scale(2.0) as a,\n):\n"
                         "    v = (model[0].output * a).save()\n    out = model.output.save()\n",
                         saved=["v", "out"], header="with model.trace() as tracer:")


@pytest.mark.crossversion
def test_parenthesized_with_from_newer_clients_runs_on_the_runtime(clients, mlp):
    model, x, calls = mlp
    compiled = clients.compile([PWITH, PWITH_INVOKE])
    for i, script in enumerate([PWITH, PWITH_INVOKE]):
        expected = xv.run_live(script, model, x)
        assert set(expected) == set(script.saved)
        reference = xv.normalized(compiled["3.11"][i])
        for version in ("3.9", "3.10", "3.11", "3.12", "3.13"):
            data = compiled[version][i]
            assert xv.normalized(data) == reference, version
            program = decode(data)
            assert program.header.min_python == (3, 9) and program.header.features == ()
            ast.parse(program.units[0].source, feature_version=(3, 8))
            assert "\\\n" in program.units[0].source
            assert xv.same(xv.run_ir(data, model, x), expected) is None, version
    assert calls


def test_other_features_keep_their_level():
    src = ("with model.trace(x):\n    with (A() as a,\n          B() as b):\n        pass\n"
           "    match a:\n        case 1:\n            pass\n")
    header = lower(src, "s.py", 1).header
    assert header.min_python == (3, 10) and header.features == (("match statement", 5),)


@pytest.mark.parametrize("module", ["compiler.passes", "compiler.passes.lower_parenthesized_with",
                                    "compiler.frontend", "compiler.closure", "runtime.gate"])
def test_imports_in_any_order(module):
    """The passes use the frontend and the frontend runs the passes: no import cycle either way."""
    import sys

    proc = subprocess.run([sys.executable, "-c", "import %s" % module], cwd=xv.ROOT,
                          env=dict(os.environ, PYTHONPATH=xv.ROOT), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
