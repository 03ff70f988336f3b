"""compiler.frontend.names: free names (bindings) and assigned names of a unit."""
import textwrap

import pytest

from compiler.frontend import lower


def _lower(body):
    src = "with ctx:\n" + textwrap.indent(textwrap.dedent(body), "    ")
    return lower(src, "t.py", 1)


def free(body):
    return [b.name for b in _lower(body).bindings]


def assigned(body):
    return list(_lower(body).root.assigned)


@pytest.mark.parametrize(
    "body, expected",
    [
        ("y = x + 1\n", ["x"]),
        ("x = 1\ny = x\n", []),
        ("x = x + 1\n", ["x"]),
        ("x = 1; y = x\n", []),
        ("print(len(x), None, True, False)\n", ["print", "len", "x"]),
        ("f(model=1, **kw)\n", ["f", "kw"]),
        ("obj.attr = value\n", ["obj", "value"]),
        ("d[k] = v\n", ["d", "k", "v"]),
        ("a, (b, *c) = t\nprint(a, b, c)\n", ["t", "print"]),
    ],
)
def test_basic(body, expected):
    assert free(body) == expected


@pytest.mark.parametrize(
    "body, expected",
    [
        ("r = [x for x in xs if x > lo]\n", ["xs", "lo"]),
        ("r = [y for x in xs for y in x]\n", ["xs"]),
        ("r = [x for x in x]\n", ["x"]),  # the first iterable is read outside
        ("r = {k: v for k, v in items}\n", ["items"]),
        ("r = sum(i * w for i in range(n))\n", ["sum", "w", "range", "n"]),  # source order
        ("r = [(last := v) for v in vs]\nprint(last)\n", ["vs", "print", "last"]),
    ],
)
def test_comprehensions(body, expected):
    assert free(body) == expected


def test_walrus_in_comprehension_binds_outside():
    assert assigned("r = [(last := v) for v in vs]\n") == ["last", "r"]


@pytest.mark.parametrize(
    "body, expected",
    [
        ("f = lambda a, b=d: a + b + c\n", ["d", "c"]),
        ("f = lambda *args, **kw: (args, kw)\n", []),
        ("def g(p, *args, k=kd, **kw) -> R:\n    return p + args + k + kw + q\n", ["kd", "R", "q"]),
        ("def g():\n    return G\n", ["G"]),
        ("G = 1\ndef g():\n    return G\n", []),
        ("def g():\n    return G\nG = 1\n", ["G"]),
        ("def g(n):\n    return g(n - 1)\n", []),
        ("def g():\n    loc = 1\n    return loc\n", []),
        ("def g():\n    print(loc)\n    loc = 1\n", ["print"]),  # local (UnboundLocalError), not free
        ("def g():\n    global H\n    H = 1\n    return H\n", ["H"]),
        (
            "def outer():\n    v = 1\n    def inner():\n        nonlocal v\n        v += 1\n        return v\n",
            [],
        ),
        ("@deco(arg)\ndef g():\n    pass\n", ["deco", "arg"]),
    ],
)
def test_functions_and_lambdas(body, expected):
    assert free(body) == expected


def test_global_declared_assignment_is_assigned():
    assert assigned("def g():\n    global H\n    H = 1\n") == ["H", "g"]


@pytest.mark.parametrize(
    "body, expected",
    [
        ("class C(Base, metaclass=M):\n    y = 1\n    z = y + w\n", ["Base", "M", "w"]),
        ("class C:\n    y = 1\n    def m(self):\n        return y\n", ["y"]),  # class scope skipped
        ("class C:\n    x = x\n", ["x"]),  # read before the class binding: global
        ("class C:\n    ys = [y for y in range(3)]\n", ["range"]),
    ],
)
def test_class_bodies(body, expected):
    assert free(body) == expected


@pytest.mark.parametrize(
    "body, expected",
    [
        ("del x\n", ["x"]),
        ("x = 1\ndel x\n", []),
        ("n += 1\n", ["n"]),
        ("n = 0\nn += 1\n", []),
        ("d[k] += 1\n", ["d", "k"]),
    ],
)
def test_del_and_augmented(body, expected):
    assert free(body) == expected


@pytest.mark.parametrize(
    "body, expected",
    [
        ("if c:\n    y = 1\nprint(y)\n", ["c", "print", "y"]),
        ("if c:\n    y = 1\n    print(y)\n", ["c", "print"]),
        ("for i in r:\n    print(i)\n", ["r", "print"]),
        ("for i in r:\n    pass\nprint(i)\n", ["r", "print", "i"]),
        ("for i in r:\n    print(t)\n    t = i\n", ["r", "print", "t"]),
        ("while c:\n    z = 1\nelse:\n    print(z)\n", ["c", "print", "z"]),
        ("with open(f) as fh:\n    fh.read()\nfh.close()\n", ["open", "f"]),
        ("with a:\n    v = 1\nprint(v)\n", ["a", "print", "v"]),
        ("try:\n    v = 1\nexcept E as e:\n    print(e, v)\n", ["E", "print", "v"]),
        ("if (n := f()):\n    print(n)\n", ["f", "print", "n"]),  # walrus: never definite
    ],
)
def test_flow(body, expected):
    assert free(body) == expected


def test_imports():
    assert free("import os.path\nos.getcwd()\n") == []
    assert free("from a import b as c, d\nc(d)\n") == []
    assert free("from a import *\nname\n") == ["name"]
    assert assigned("import os.path, numpy as np\nfrom a import b as c\n") == ["c", "np", "os"]


def test_assigned_targets():
    body = """\
    a, (b, *c) = t
    x: int = 1
    ann: int
    n += 1
    for i, j in pairs:
        pass
    with ctx2 as (w1, w2):
        pass
    import mod
    def fn(): pass
    class K: pass
    print(q := 1)
    try:
        pass
    except E as err:
        pass
    obj.attr = 1
    """
    assert assigned(body) == sorted(
        ["a", "b", "c", "x", "n", "i", "j", "w1", "w2", "mod", "fn", "K", "q", "err"]
    )


def test_match_statement():
    body = """\
    match cmd:
        case Point(x=px, y=0) if px > lim:
            use(px)
        case {"k": v, **rest}:
            use(v, rest)
        case [first, *others] | (first, *others):
            use(first, others)
        case Color.RED:
            pass
        case other:
            use(other)
    """
    assert free(body) == ["cmd", "Point", "lim", "use", "Color"]
    assert assigned(body) == ["first", "other", "others", "px", "rest", "v"]


def test_type_alias_and_type_params():
    body = "type A[T] = list[T]\ndef f[U](x: U) -> U:\n    return x\nprint(A, f)\n"
    assert free(body) == ["list", "print"]
    assert assigned(body) == ["A", "f"]


def test_reads_in_child_units_are_bindings():
    src = textwrap.dedent(
        """\
        with model.trace() as t:
            a = 1
            with t.invoke(p):
                out = a + b
        """
    )
    p = lower(src, "t.py", 1)
    assert [b.name for b in p.bindings] == ["t", "p", "b"]
    assert p.units[1].assigned == ("out",)
