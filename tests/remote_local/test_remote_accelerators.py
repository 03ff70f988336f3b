"""Standard-library functions that live in C accelerators, or on hidden instances, work remotely.

``functools.reduce.__module__`` is ``_functools`` and ``random.random`` is a
builtin method of a hidden ``random.Random``; the server's allowlist names the
public modules, so these objects go by the public name that holds the very
same object (``functools:reduce``, ``random:random``). Checked in a trace body,
in user library code sent by value, and in an installed pure-Python package
sent with ``nnsight.register``.
"""
import functools
import heapq
import importlib
import operator
import random
import sys
import textwrap

import pytest
import torch

import nnsight
from compiler import policy
from compiler.diagnostics import DiagnosticError
from compiler.public_homes import server_ref
from nnsight import NNsight
from runtime.loader import Loader
from compiler.ir.nodes import Header, Program

from functools import reduce
from operator import add
from heapq import heappush, heappop
from bisect import insort
from random import random as random_float, randint, seed

PKG = '''\
"""A pure-Python package that leans on accelerator-backed functions."""
from functools import reduce
from operator import add, mul
from heapq import heappush, heappop
from bisect import insort
from random import random, seed


def total(values):
    return reduce(add, values)


def product(values):
    return reduce(mul, values)


def smallest(values, k):
    heap = []
    for v in values:
        heappush(heap, v)
    return [heappop(heap) for _ in range(k)]


def sorted_insert(values, v):
    out = list(values)
    insort(out, v)
    return out


def seeded(n):
    seed(n)
    return random()


def summary(t):
    row = t[0].tolist()
    return total(row), smallest(row, 2), sorted_insert(sorted(row), 0.0), seeded(7)
'''


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 4))


@pytest.fixture(scope="module")
def model(net):
    return NNsight(net)


@pytest.fixture(scope="module")
def accelpkg(tmp_path_factory):
    """``accelpkg`` installed in a site-packages folder (so not sent unless registered)."""
    site = tmp_path_factory.mktemp("accel") / "site-packages"
    (site / "accelpkg").mkdir(parents=True)
    (site / "accelpkg" / "__init__.py").write_text("from .core import summary, total  # noqa\n")
    (site / "accelpkg" / "core.py").write_text(PKG)
    sys.path.insert(0, str(site))
    yield importlib.import_module("accelpkg")
    sys.path.remove(str(site))
    policy.unregister("accelpkg")
    for name in [n for n in sys.modules if n.split(".")[0] == "accelpkg"]:
        del sys.modules[name]


@pytest.mark.parametrize("obj, name, ref", [
    (functools.reduce, "reduce", "functools:reduce"),
    (operator.add, "add", "operator:add"),
    (heapq.heappush, "heappush", "heapq:heappush"),
    (insort, "insort", "bisect:insort"),  # insort is insort_right: the bound name wins
    (random.random, "random", "random:random"),
    (random.randint, "randint", "random:randint"),
])
def test_reference_is_the_public_module_by_identity(obj, name, ref):
    assert server_ref(obj, (name,)) == ref
    loaded = Loader(Program(header=Header(), units=())).object(ref)
    assert loaded is obj  # the server resolves the reference to this very object


def test_random_random_is_a_method_of_the_hidden_instance():
    assert random.random.__self__.__class__ is random.Random and random.random.__module__ is None
    assert server_ref(random.random, ("random",)) == "random:random"
    assert server_ref(random.Random(0).random, ("random",)) is None  # someone else's instance: not public


def test_trace_body_uses_accelerator_functions(model, net):
    x = torch.randn(2, 4)
    with model.trace(x, remote="local"):
        row = model.output[0].tolist()
        s = nnsight.save(reduce(add, row))
        heap = []
        heappush(heap, 3)
        heappush(heap, 1)
        first = nnsight.save(heappop(heap))
        ordered = [1, 5]
        insort(ordered, 3)
        ordered = nnsight.save(ordered)
        seed(11)
        r = nnsight.save((random_float(), randint(0, 100)))
    seed(11)
    assert r == (random_float(), randint(0, 100))
    assert s == pytest.approx(sum(net(x)[0].tolist()))
    assert (first, ordered) == (1, [1, 3, 5])


def test_trace_body_imports_accelerator_functions(model):
    x = torch.randn(2, 4)
    with model.trace(x, remote="local"):
        from functools import reduce as fold
        from operator import mul
        import random as rnd
        rnd.seed(5)
        out = nnsight.save((fold(mul, [1, 2, 3, 4]), rnd.random()))
    random.seed(5)
    assert out == (24, random.random())


def test_registered_package_using_accelerators(accelpkg, model, net):
    x = torch.randn(2, 4)
    with pytest.raises(DiagnosticError) as info:  # installed, not provided by the server
        with model.trace(x, remote="local"):
            out = nnsight.save(accelpkg.summary(model.output))
    assert {d.code for d in info.value.diagnostics} == {"NN202"}
    nnsight.register(accelpkg)
    with model.trace(x, remote="local"):
        out = nnsight.save(accelpkg.summary(model.output))
    assert out == accelpkg.summary(net(x))


def test_saved_accelerator_functions_come_back_as_themselves(model):
    x = torch.randn(2, 4)
    with model.trace(x, remote="local"):
        out = nnsight.save([reduce, random_float, randint, heappush])
    assert out[0] is reduce and out[1] is random_float and out[2] is randint and out[3] is heappush
