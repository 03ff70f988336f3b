"""Differential test: the ast fast path of the frontend vs the libcst path.

Every source snippet of the frontend tests (each string literal of
tests/compiler/test_frontend_*.py, as is, dedented, and wrapped as the body of
a ``with ctx:`` block) is lowered at every line of every with-header by both
paths: the fast path must return the identical Program or decline (None).
``scan_accesses`` is compared the same way. Hypothesis adds with-blocks built
from a small statement grammar.
"""
import ast
import glob
import os
import sys
import textwrap

import pytest

from compiler.frontend import fast_accesses, fastpath
from compiler.frontend.accesses import scan_accesses as scan_libcst
from compiler.frontend.errors import FrontendError
from compiler.frontend.lower import lower as lower_libcst

HERE = os.path.dirname(__file__)
FILES = sorted(
    f for f in glob.glob(os.path.join(HERE, "test_frontend_*.py")) if not f.endswith("test_frontend_fastpath.py")
)

EXTRA = [
    # cases aimed at the fast path's own rules
    "with m.trace(x):\n    for i in y:\n        a = 1\n        # footer\n    # footer2\n        # footer3\nb = 2\n",
    "with m.trace(x):\n\tif a:\n\t\tb = 1\n\tc = (lambda: c)\n\td = lambda: d\n",
    "with m.trace(x):\n    é = 'é'\n    with a: ü = é; b = ü\n",
    "with m.trace(x):\r\n    a = 1\r\n    with b:\r\n        c = a\r\n",
    "with m.trace(x):  # c\n\n    # lead\n  # less indented\n\n    @dec\n    def f(): return g\n    f()\n",
    "with m.trace(x): (a) = 1; b = (a)\n",
    "with m.trace(x):\n    s = '''\nnot indented\n  text'''\n    t = ('a'\n 'b')\n    u = f'''{\nx}'''\n",
    "with m.trace(x):\n    try:\n        pass\n    except E as e:\n        e\n    print(e)\n",
    "with m.trace(x):\n    try:\n        pass\n    except E as e:\n        @e.deco\n        def f(): pass\n",
    "with m.trace(x):\n    try:\n        pass\n    except E as e: e\n",
    "with m.trace(x):\n    match v:\n        case {'k': a, **rest} if a: print(rest)\n        case C(p, q=[*r]) as w: print(w, r)\n        case None: pass\n",
    "with m.trace(x):\n    try:\n        pass\n    except* E as g:\n        g\n",
    "with m.trace(x):\n    with (a as b, c as d):\n        e = b\n",
    "with m.trace(x):\n    with a, \\\n         b:\n        e = 1\n",
    "async def f():\n    with m.trace(x):\n        async with a as b:\n            with c:\n                d = b\n",
    "async def f():\n    async with m.trace(x):\n        pass\n",
    "with m.trace(x):\n    h = model.transformer.h[0].output.save()\n    model.h[-1].input[0][:] = 0\n"
    "    model.a['k'].output; model.b['k' 'j'].output; model.c[i].output; model.d(1).output\n"
    "    y = {k: v for k, v in d.items()}; z = {**q, 1: model.e.output}\n    w = p if model.f.output else None\n",
    "with m.trace(x):\n    class C(B):\n        a = 1\n        def g(self, x=a, *r, k: T = model.z.output, **kw) -> R: return x\n    C()\n",
    "with m.trace(x):\n    global g\n    def f():\n        nonlocal_ = 1\n        global h\n        h = 2\n        return h\n    del q, (r)\n    import a.b.c, d as e\n    from f import g as gg, *\n",
    "with m.trace(x):\n    x: int\n    y: int = 1\n    y += z\n    obj.a += 1\n    [w := 1 for _ in range(3)]\n",
    # the IR's access facts: features needing every module, invoke headers, dotted string steps
    "with m.trace(x):\n    c = model.h[0].cache(); s = model.a.source\n    with t.invoke(1):\n        pass\n"
    "    with f(t.invoke):\n        pass\n    with a, t.invoke (y) as b:\n        pass\n    g(hook=True)\n",
    "with m.trace(x):\n    v = model.h['a.b'].output\n    with tracer.invoke():\n        w = d.get('k')\n",
    "with m.trace(x):\n    for n, mod in model.named_modules():\n        pass\n    with no_grad():\n        y = model.modules\n",
    "def run(model):\n    with model.trace(\n        a,\n        # comment\n        b,\n    ) as t:  # the trace\n        # lead\n\n        z = t\n",
]


def _strings():
    out = []
    for path in FILES:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "\n" in node.value:
                out.append(node.value)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) > 2:
                out.append(node.value + "\n")
    return list(dict.fromkeys(out))


def _variants(s):
    yield s
    d = textwrap.dedent(s)
    if d != s:
        yield d
    yield "with ctx:\n" + textwrap.indent(d, "    ")


def _cases():
    cases = []
    for s in _strings() + EXTRA:
        for text in _variants(s):
            try:
                tree = ast.parse(text)
            except (SyntaxError, ValueError):
                if "with" in text:
                    cases.append((text, 1))
                continue
            lines = set()
            for node in ast.walk(tree):
                if isinstance(node, (ast.With, ast.AsyncWith)):
                    end = node.body[0].lineno
                    lines.update(range(node.lineno, end + 1))
            for line in sorted(lines):
                cases.append((text, line))
    return list(dict.fromkeys(cases))


CASES = _cases()
SOURCES = list(dict.fromkeys(text for text, _ in CASES))


def _libcst(text, line, first_line=1):
    try:
        return lower_libcst(text, "t.py", line, first_line=first_line)
    except FrontendError as e:
        return type(e)
    except Exception as e:  # e.g. a parse error inside libcst
        return type(e)


def check(text, line, first_line=1):
    fast = fastpath.try_lower(text, "t.py", line, first_line=first_line)
    if fast is None:
        return False
    slow = _libcst(text, line, first_line)
    if isinstance(slow, type):  # the libcst path fails where ast parses: not an equality case
        return True
    assert fast == slow, (text, line)
    for unit in slow.units:
        check_accesses(unit.source)
    return True


def check_accesses(source):
    fast = fast_accesses.try_scan([source])
    if fast is None:
        return False
    try:
        slow = scan_libcst(source)
    except Exception:
        return True
    assert fast == slow, source
    return True


def test_collected_cases():
    assert len(CASES) > 100
    taken = sum(check(text, line) for text, line in CASES)
    lowered = sum(not isinstance(_libcst(text, line), type) for text, line in CASES)
    # most lowerable cases must go through the fast path (the rest declined, see fastpath's docstring)
    sys.stderr.write("\nfast path took %d of %d cases (%d lowerable by libcst)\n" % (taken, len(CASES), lowered))
    assert taken > lowered * 3 // 4, (taken, lowered)


def test_first_line_offset():
    sample = CASES[:: max(1, len(CASES) // 40)]
    taken = sum(check(text, line + 99, first_line=100) for text, line in sample)
    lowered = sum(not isinstance(_libcst(text, line + 99, 100), type) for text, line in sample)
    # a fast path that declined every shifted case would compare nothing
    assert lowered >= 10 and taken > lowered * 3 // 4, (taken, lowered)


def test_access_facts_in_the_ir():
    """Both paths record what the runtime decides from: chains, dynamic names, needs-all, invokes."""
    src = ("with m.trace(x):\n    h = model.h[0].output\n    with tracer.invoke(p):\n        y = layers[i].output\n"
           "    with torch.no_grad():\n        z = model.ln.output\n    s = model['a.b'].output\n")
    for program in (fastpath.try_lower(src, "t.py", 1), lower_libcst(src, "t.py", 1)):
        assert program.envoys == ("model.h.0", "model.ln")
        assert program.dynamic is False
        # bare uses (assignment targets too); model: its chain through 'a.b' has no dotted path
        assert set(program.dynamic_names) == {"h", "p", "layers", "i", "y", "torch", "z", "s", "model"}
        assert [u.facts for u in program.units] == [(), ("invoke",), ()]
        assert [u.target for u in program.units] == [None, None, None]
    src = "with m.trace(x) as tr:\n    with a, tr.iter[:] as (p, q), b as step:\n        pass\n"
    for program in (fastpath.try_lower(src, "t.py", 1), lower_libcst(src, "t.py", 1)):
        assert [u.target for u in program.units] == ["tr", "step"]
    for needs_all in ("c = model.h.cache()\n", "s = model.h.source\n", "g = model.get('h')\n",
                      "n = list(model.modules())\n", "n = model.named_modules()\n", "f(model, hook=True)\n"):
        text = "with m.trace(x):\n    " + needs_all
        for program in (fastpath.try_lower(text, "t.py", 1), lower_libcst(text, "t.py", 1)):
            assert program.dynamic is True, needs_all
    text = "with m.trace(x):\n    t = 'x.cache()  # .source'\n"  # text in strings and comments is not code
    assert fastpath.try_lower(text, "t.py", 1).dynamic is False


def test_backward_fact_in_the_ir():
    """A nested with-header calling ``<expr>.backward(...)`` is a gradient session: both paths mark it,
    wherever the call sits in the header; a plain ``loss.backward()`` statement is no unit at all."""
    src = ("with m.trace(x):\n    hs = model.h[0].output\n    hs.requires_grad = True\n"
           "    with model.out.output.sum().backward(retain_graph=True):\n        g = hs.grad.save()\n"
           "    with tracer.invoke(p), (h * 2).sum().backward():\n        pass\n"
           "    with torch.no_grad():\n        loss = (h * 2).sum()\n        loss.backward()\n"
           "    with tracer.invoke(p):\n        with model.backward_hook():\n            pass\n")
    for program in (fastpath.try_lower(src, "t.py", 1), lower_libcst(src, "t.py", 1)):
        assert [u.facts for u in program.units] == [(), ("backward",), ("invoke", "backward"), (), ("invoke",), ()]
        assert program.units[1].header == (4, 4) and program.unknown_facts == ()
        assert program.knows("backward")


def test_declines():
    src = "with m.trace(x):\n    with (a as b, c as d):\n        e = b\n"
    assert fastpath.try_lower(src, "t.py", 1) is None
    assert fastpath.try_lower("async def f():\n    async with a:\n        pass\n", "t.py", 2) is None
    assert fastpath.try_lower("x = (\n", "t.py", 1) is None
    assert fastpath.try_lower("with m.trace(x):\n    a = 1\n", "t.py", 2) is None


def test_accesses_on_all_sources():
    taken = 0
    for text in SOURCES:
        taken += check_accesses(text)
    assert taken > len(SOURCES) // 2


def test_force_libcst(monkeypatch):
    import compiler.frontend as frontend

    monkeypatch.setenv("NNSIGHT_FRONTEND", "libcst")
    assert not fastpath.enabled()
    src = "with m.trace(x):\n    a = model.h[0].output\n"
    assert frontend.lower(src, "t.py", 1) == lower_libcst(src, "t.py", 1)
    assert frontend.scan_accesses("a = model.h[0].output\n") == scan_libcst("a = model.h[0].output\n")


def test_package_keeps_lower_function():
    import compiler.frontend as frontend
    import compiler.frontend.lower  # noqa: F401

    assert callable(frontend.lower) and frontend.lower is fastpath.lower


# -- hypothesis: with-blocks from a small statement grammar ---------------------------------------

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

NAMES = st.sampled_from(["a", "b", "x", "model", "t", "f", "i"])


@st.composite
def expr(draw, depth=0):
    n = draw(NAMES)
    kind = draw(st.integers(0, 9 if depth < 2 else 3))
    if kind <= 1:
        return n
    if kind == 2:
        return n + "." + draw(st.sampled_from(["output", "h", "input", "trace", "x"]))
    if kind == 3:
        return "%s[%s]" % (n, draw(st.sampled_from(["0", "-1", "i", "'k'", ":", "1, 2"])))
    if kind == 4:
        return "%s(%s)" % (n, draw(expr(depth + 1)))
    if kind == 5:
        return "[%s for %s in %s]" % (draw(expr(depth + 1)), draw(NAMES), draw(expr(depth + 1)))
    if kind == 6:
        return "(lambda %s: %s)" % (draw(NAMES), draw(expr(depth + 1)))
    if kind == 7:
        return "(%s := %s)" % (draw(NAMES), draw(expr(depth + 1)))
    if kind == 8:
        return "%s + %s" % (draw(expr(depth + 1)), draw(expr(depth + 1)))
    return "model.h[0].output.save()"


@st.composite
def block(draw, indent, depth=0):
    out = []
    pad = "    " * indent
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.integers(0, 9 if depth < 2 else 4))
        if kind <= 2:
            out.append("%s%s = %s" % (pad, draw(NAMES), draw(expr())))
        elif kind == 3:
            out.append("%s%s" % (pad, draw(expr())))
        elif kind == 4:
            out.append("%s%s = %s; %s += 1" % (pad, draw(NAMES), draw(expr()), draw(NAMES)))
        elif kind == 5:
            out.append("%sif %s:" % (pad, draw(expr())))
            out.append(draw(block(indent + 1, depth + 1)))
            if draw(st.booleans()):
                out.append("%selse:" % pad)
                out.append(draw(block(indent + 1, depth + 1)))
        elif kind == 6:
            out.append("%sfor %s in %s:" % (pad, draw(NAMES), draw(expr())))
            out.append(draw(block(indent + 1, depth + 1)))
        elif kind == 7:
            asname = draw(st.sampled_from(["", " as t", " as (a, b)"]))
            out.append("%swith %s%s:" % (pad, draw(expr()), asname))
            out.append(draw(block(indent + 1, depth + 1)))
        elif kind == 8:
            out.append("%sdef %s(%s=%s):" % (pad, draw(NAMES), draw(NAMES), draw(expr())))
            out.append(draw(block(indent + 1, depth + 1)))
        else:
            out.append("%stry:" % pad)
            out.append(draw(block(indent + 1, depth + 1)))
            out.append("%sexcept E as %s:" % (pad, draw(NAMES)))
            out.append(draw(block(indent + 1, depth + 1)))
        if draw(st.integers(0, 5)) == 0:
            out.append(pad + "# comment")
    return "\n".join(out)


def test_hypothesis_with_blocks():
    taken = []

    @hypothesis.settings(max_examples=60, deadline=None, database=None)
    @hypothesis.given(body=block(1), comment=st.booleans())
    def compare(body, comment):
        text = "with model.trace(x):%s\n%s\n" % ("  # c" if comment else "", body)
        text = "def run(model, x):\n" + textwrap.indent(text, "    ") + "    return a\n"
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.With):
                taken.append(check(text, node.lineno))

    compare()
    # the grammar's blocks are plain code: the fast path must take (and so compare) most of them
    assert len(taken) >= 60 and sum(taken) >= len(taken) * 3 // 4, (sum(taken), len(taken))


def test_fast_path_takes_a_plain_trace_and_agrees_with_libcst():
    src = "def f(model, x):\n    with model.trace(x):\n        h = model.h[0].output.save()\n    return h\n"
    fast = fastpath.try_lower(src, "t.py", 2)
    assert fast is not None, "the fast path declined the most common kind of trace"
    assert fast == lower_libcst(src, "t.py", 2)
    assert fastpath.lower(src, "t.py", 2) == fast


# -- the with-statement chunk: parsing only the statement at the line ------------------------------

CHUNK_LAYOUTS = [
    # headers closed at the with's own indentation, bodies with less-indented continuations,
    # strings with unindented lines, backslashes, comments, tabs, else-branches after the with
    "def f(model):\n    with model.trace(\n        x,\n    ) as t:\n        a = 1\n    return a\n",
    "def f(model):\n    with model.trace(x):\n        a = g(\n1)\n        b = 2\n    return b\n",
    "def f(model):\n    with model.trace(x):\n        s = '''\nwith q:\n  r'''\n        b = s\n",
    "def f(model):\n    with model.trace(x):\n        a = 1 + \\\n2\n        b = 3\n",
    "def f(model):\n    with model.trace(x):\n# flush-left comment\n        a = 1\n  # other\n        b = 2\n",
    "def f(model):\n\twith model.trace(x):\n\t\ta = 1\n\treturn a\n",
    "if c:\n    with model.trace(x):\n        a = 1\nelse:\n    with model.trace(y):\n        a = 2\n",
    "with model.trace(x):\n    a = 1\nb = 2\n",
    "x = [\n    1,\n]\nwith model.trace(x): a = 1\n",
    "class C:\n    def f(self, model):\n        with model.trace(x) as t:\n            with t.invoke(y):\n                a = 1\n            with t.invoke(\n                z\n            ):\n                b = 2\n",
    "def f(model):\n    with \\\n        model.trace(x):\n        a = 1\n",
    "def f(model):\n    with(model.trace(x)) as t:\n        a = t\n",
]


@pytest.mark.parametrize("text", CHUNK_LAYOUTS)
def test_chunk_layouts_lower_like_the_whole_file(text):
    heads = sorted({node.lineno for node in ast.walk(ast.parse(text)) if isinstance(node, ast.With)})
    assert heads
    for head in heads:
        for line in range(head, head + 3):
            _same_with_and_without_chunks(text, line)


def test_chunk_matches_whole_file_on_collected_cases():
    for text, line in CASES:
        _same_with_and_without_chunks(text, line)


def _same_with_and_without_chunks(text, line):
    results = []
    for chunks in (True, False):
        fastpath.CHUNKS = chunks
        try:
            results.append(fastpath.try_lower(text, "t.py", line))
        finally:
            fastpath.CHUNKS = True
            fastpath._TREES.clear()
    chunk, whole = results
    if whole is not None:  # (where the whole text doesn't parse, only the chunk may)
        assert chunk == whole, (text, line)
