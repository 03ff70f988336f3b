"""compiler.frontend.lower: with-block -> Program (units, headers, bindings)."""
import dataclasses
import os
import sys
import textwrap

import pytest

from compiler.frontend import lower
from compiler.ir.nodes import BIND_RUNTIME, UNIT_BLOCK, UNIT_TRACE, Header

GOLDEN = os.path.join(os.path.dirname(os.path.dirname(__file__)), "golden", "frontend", "lower_basic.txt")

BASIC = textwrap.dedent(
    '''\
    import torch

    def run(model, prompts, scale=0.5):
        results = []
        with model.trace(
            prompts[0],
        ) as tracer:  # the trace
            # leading comments are not part of the body
            h = model.transformer.h[0].output.save()
            doc = """
    kept verbatim
            also kept
    """
            for i, prompt in enumerate(prompts):
                with tracer.invoke(prompt):
                    logits = model.lm_head.output[:, -1]
                    results.append(logits.save())
                    with torch.no_grad(): x = logits * scale; y = x + bias
            total = sum(r for r in results if r is not None)
            # trailing comment inside the body is kept
            def helper(a, b=default):
                return a + glob
        return results
    '''
)


def _stable(program):
    """Program with a header that does not depend on the interpreter."""
    h = program.header
    header = Header(producer="nnsight test", python="3.x", min_python=h.min_python, features=h.features)
    return dataclasses.replace(program, header=header)


def _dump(program):
    try:
        from compiler.ir.printer import print_program
    except ImportError:  # pragma: no cover - printer not available
        pytest.skip("compiler.ir.printer not available")
    return print_program(_stable(program))


def test_golden_basic():
    program = lower(BASIC, "demo.py", 6)
    text = _dump(program)
    if os.environ.get("UPDATE_GOLDEN"):
        os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
        with open(GOLDEN, "w") as f:
            f.write(text)
        pytest.skip(f"UPDATE_GOLDEN: wrote {GOLDEN}; nothing was compared (run again without it)")
    with open(GOLDEN) as f:
        assert text == f.read()


def test_basic_structure():
    p = lower(BASIC, "demo.py", 5)
    assert [(u.id, u.kind, u.parent) for u in p.units] == [
        (0, UNIT_TRACE, None),
        (1, UNIT_BLOCK, 0),
        (2, UNIT_BLOCK, 1),
    ]
    root, invoke, no_grad = p.units
    assert root.header == (5, 7) and (root.loc.line, root.loc.col) == (9, 8)
    assert invoke.header == (15, 15) and (invoke.loc.line, invoke.loc.col) == (16, 16)
    assert no_grad.header == (18, 18) and no_grad.source == "x = logits * scale; y = x + bias\n"
    assert no_grad.loc.col == len("                with torch.no_grad(): ")
    assert root.assigned == ("doc", "h", "helper", "i", "logits", "prompt", "total", "x", "y")
    assert invoke.assigned == ("logits", "x", "y")
    assert no_grad.assigned == ("x", "y")
    names = [b.name for b in p.bindings]
    assert names == [
        "model", "enumerate", "prompts", "tracer", "results", "torch", "scale", "bias",
        "sum", "default", "glob",
    ]
    assert all(b.kind == BIND_RUNTIME for b in p.bindings)
    assert p.header.producer.startswith("nnsight ") and p.header.min_python == (3, 9)
    # the frontend's access facts: static chains, names used otherwise, no feature needing all
    assert p.envoys == ("model.transformer.h.0", "model.lm_head")
    assert p.dynamic is False
    assert set(p.dynamic_names) >= {"results", "logits", "prompts", "torch"}
    assert "model" not in p.dynamic_names
    assert [u.facts for u in p.units] == [(), ("invoke",), ()]


def test_unit_lines_map_to_user_lines():
    p = lower(BASIC, "demo.py", 5)
    user = BASIC.splitlines()
    for unit in p.units:
        compile(unit.source, unit.loc.file, "exec")
        for i, line in enumerate(unit.source.splitlines()):
            original = user[unit.loc.line - 1 + i]
            assert line.strip() == "" or line in original, (unit.id, i, line)
        # a unit's header lines sit in its parent's source
        if unit.parent is not None:
            parent = p.units[unit.parent]
            assert parent.loc.line <= unit.header[0] <= unit.header[1] <= unit.loc.line


def test_one_line_body():
    src = "with model.trace(x): a = 1; b = a  # note\nc = 3\n"
    p = lower(src, "f.py", 1)
    u = p.root
    assert u.source == "a = 1; b = a  # note\n"
    assert (u.loc.line, u.loc.col, u.header) == (1, 21, (1, 1))
    assert u.assigned == ("a", "b")
    assert [b.name for b in p.bindings] == []


def test_first_line_offset():
    src = "with model.trace(x):\n    with t.invoke(y):\n        z = 1\n"
    p = lower(src, "cell", 100, first_line=100)
    assert p.root.header == (100, 100) and p.root.loc.line == 101
    assert p.units[1].header == (101, 101) and p.units[1].loc.line == 102


def test_nested_withs_everywhere_but_in_scopes():
    src = textwrap.dedent(
        """\
        with model.trace(x) as t:
            if a:
                with t.invoke(1):
                    pass
            else:
                while b:
                    try:
                        with t.invoke(2):
                            with inner():
                                pass
                    except E:
                        with t.invoke(3): pass
                    finally:
                        for i in c:
                            with t.invoke(4):
                                pass
            match v:
                case 1:
                    with t.invoke(5):
                        pass
            def f():
                with not_a_unit():
                    pass
            class K:
                with not_a_unit_either():
                    pass
            g = lambda: 1
        """
    )
    p = lower(src, "f.py", 1)
    assert [(u.id, u.parent, u.header[0]) for u in p.units] == [
        (0, None, 1), (1, 0, 3), (2, 0, 8), (3, 2, 9), (4, 0, 12), (5, 0, 15), (6, 0, 19),
    ]
    assert p.header.min_python == (3, 10)
    assert p.header.features == (("match statement", 17),)
    if sys.version_info >= (3, 10):
        for u in p.units:
            compile(u.source, "f.py", "exec")


def test_parenthesized_child_header_range():
    src = textwrap.dedent(
        """\
        with model.trace(x) as t:
            with (
                t.invoke(1) as a,
                other(),
            ):  # c
                # lead
                y = 2
        """
    )
    p = lower(src, "f.py", 1)
    child = p.units[1]
    assert child.header == (2, 5) and child.loc.line == 7 and child.source == "y = 2\n"
    # lowered by compiler/passes/lower_parenthesized_with.py: lines kept, 3.9 syntax
    assert p.header.features == () and p.header.min_python == (3, 9)
    assert p.root.source.splitlines()[:4] == ["with \\", "    t.invoke(1) as a, \\", "    other() \\", " :  # c"]
    assert p.root.assigned == ("a", "y")


def test_decorated_first_statement_and_comments():
    src = textwrap.dedent(
        """\
        with model.trace(x):

            # comment
            @decorator
            # between
            def f():
                return 1
            # end comment
            z = f()
            # footer comment
        after = 1
        """
    )
    p = lower(src, "f.py", 1)
    assert p.root.loc.line == 4
    assert p.root.source == "@decorator\n# between\ndef f():\n    return 1\n# end comment\nz = f()\n"
    assert [b.name for b in p.bindings] == ["decorator"]
