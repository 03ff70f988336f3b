"""compiler.frontend.locate: finding the with-statement from a header line."""
import textwrap

import pytest

from compiler.frontend.errors import UnsupportedSyntaxError, WithBlockNotFoundError
from compiler.frontend.locate import locate_with


def _headers(src, lines):
    return {line: locate_with(src, line).header for line in lines}


def test_single_line_header():
    src = "x = 1\nwith model.trace(x) as t:\n    h = 1\n"
    assert locate_with(src, 2).header == (2, 2)


def test_multiline_call_args_any_header_line():
    src = textwrap.dedent(
        """\
        with model.trace(
            "hello",
            max_new_tokens=3,
        ) as tracer:  # comment
            # leading comment

            h = 1
        """
    )
    assert _headers(src, [1, 2, 3, 4]) == {n: (1, 4) for n in [1, 2, 3, 4]}
    for body_line in (5, 6, 7):
        with pytest.raises(WithBlockNotFoundError):
            locate_with(src, body_line)


def test_multiple_items():
    src = "with model.trace(x) as t, torch.no_grad():\n    pass\n"
    lw = locate_with(src, 1)
    assert lw.header == (1, 1) and len(lw.node.items) == 2


def test_parenthesized_items():
    src = textwrap.dedent(
        """\
        with (
            model.trace(x) as t,
            torch.no_grad(),
        ):
            pass
        """
    )
    assert _headers(src, [1, 2, 3, 4]) == {n: (1, 4) for n in [1, 2, 3, 4]}


def test_backslash_header():
    src = "with a(), \\\n     b():\n    pass\n"
    assert _headers(src, [1, 2]) == {1: (1, 2), 2: (1, 2)}


def test_one_line_body():
    src = "with model.trace(x): h = foo(); g = 2\nafter = 1\n"
    lw = locate_with(src, 1)
    assert lw.header == (1, 1)
    with pytest.raises(WithBlockNotFoundError):
        locate_with(src, 2)


def test_nested_withs_pick_the_right_one():
    src = textwrap.dedent(
        """\
        with session() as s:
            with model.trace(x) as t:
                with t.invoke(
                    y,
                ):
                    pass
        """
    )
    assert _headers(src, [1, 2, 3, 4, 5]) == {1: (1, 1), 2: (2, 2), 3: (3, 5), 4: (3, 5), 5: (3, 5)}


def test_with_inside_def_inside_method():
    src = textwrap.dedent(
        """\
        import torch

        class Probe:
            @staticmethod
            def helper():
                pass

            def run(self, model):
                def inner(x):
                    # comment
                    with model.trace(x) as t:
                        return t
                return inner
        """
    )
    lw = locate_with(src, 11)
    assert lw.header == (11, 11)


def test_first_line_offset():
    src = "with a:\n    pass\n"
    lw = locate_with(src, 40, first_line=40)
    assert lw.header == (1, 1)  # text numbering


def test_not_found_message():
    src = "a = 1\nb = 2\nc = 3\nd = 4\ne = 5\n"
    with pytest.raises(WithBlockNotFoundError) as e:
        locate_with(src, 3, filename="demo.py")
    msg = str(e.value)
    assert msg.startswith("With block not found at line 3")
    assert "We looked here:" in msg and "demo.py" in msg
    here = [line for line in msg.splitlines() if "<--- HERE" in line]
    assert len(here) == 1 and "c = 3" in here[0]
    assert "a = 1" in msg and "e = 5" in msg


def test_line_out_of_range():
    with pytest.raises(WithBlockNotFoundError):
        locate_with("with a:\n    pass\n", 10)


def test_async_with_rejected():
    src = "async def f():\n    async with model.trace(x):\n        pass\n"
    with pytest.raises(UnsupportedSyntaxError) as e:
        locate_with(src, 2, filename="demo.py")
    assert "async with" in str(e.value) and "demo.py:2" in str(e.value)


def test_unparseable_elsewhere():
    # a notebook-like text: magics and broken code outside the statement
    src = textwrap.dedent(
        """\
        %matplotlib inline
        def broken(:
            pass

        with model.trace("x") as t:
            h = 1
        if oops
        """
    )
    lw = locate_with(src, 5)
    assert lw.header == (5, 5)


def test_unparseable_with_decorators_and_else():
    src = textwrap.dedent(
        """\
        !ls
        try:
            with model.trace(
                "x",
            ):
                pass
        except Exception:
            pass
        @dec
        def f(): pass
        )))
        """
    )
    assert locate_with(src, 4).header == (3, 5)


def test_unparseable_around_the_line():
    src = "with (:\n    pass\n"
    with pytest.raises(WithBlockNotFoundError) as e:
        locate_with(src, 1)
    assert "does not parse" in str(e.value)


def test_newer_syntax_parses():
    src = textwrap.dedent(
        """\
        type Alias = list[int]
        def f[T](x: T) -> T:
            match x:
                case [a, *rest]:
                    with model.trace(f"{"nested"}"):
                        pass
        """
    )
    assert locate_with(src, 5).header == (5, 5)
