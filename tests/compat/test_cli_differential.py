"""The static checker and remote='local' agree on every import, and the allowed ones run.

Each case is one import and one expression using it, written four ways into a
generated module: imported at module level and used in the trace body
("top"), imported inside the trace body ("body"), used by a library function
of the module that the trace calls, so it is sent by value ("lib"), and
imported inside that library function ("libfn"). For every form,
``nnsight-compile check`` on the file reports errors exactly when the
remote='local' run refuses it, with the same codes; allowed cases give the
value plain Python gives.

The cases are the standard-library functions that live in C accelerator
modules or on hidden instances (``functools.reduce`` is ``_functools.reduce``,
``random.random`` a method of a hidden ``random.Random``), which the server
reaches through their public module, and the things both sides refuse. (One
known asymmetry is left out on purpose: a module-level import of a refused
module whose *data* reaches the trace, ``from sys import version``, is an
error for the checker, which cannot see which names a trace uses, while the
runtime sends the string by value.)
"""
import importlib
import sys
import textwrap

import pytest
import torch

import nnsight
from compiler.analysis import check_file
from compiler.diagnostics import DiagnosticError
from nnsight import NNsight
from runtime.loader import LoadError, ServerImportError, ServerRefusal

ALLOWED = [
    ("from functools import reduce", "reduce(lambda a, b: a + b, [1, 2, 3])"),
    ("from operator import add", "add(2, 3)"),
    ("from functools import reduce\nfrom operator import mul", "reduce(mul, [1, 2, 3, 4])"),
    ("from heapq import heappush", "heappush([], 1)"),
    ("from heapq import heappushpop", "heappushpop([1, 3], 2)"),
    ("from bisect import insort", "insort([1, 5], 3)"),
    ("from bisect import bisect_left", "bisect_left([1, 3, 5], 4)"),
    ("from random import random, seed", "(seed(0), random())[1]"),
    ("from random import randint, seed", "(seed(1), randint(0, 100))[1]"),
    ("import random", "(random.seed(2), random.random())[1]"),
    ("from random import Random", "Random(3).random()"),
    ("from struct import pack", "pack('<i', 7)"),
    ("from struct import Struct", "Struct('<h').size"),
    ("from hashlib import sha256", "sha256(b'x').hexdigest()"),
    ("from hashlib import sha256 as digest", "digest(b'y').hexdigest()"),
    ("from collections import deque, Counter", "list(deque([1, 2], maxlen=1)) + sorted(Counter('aab').values())"),
    ("from itertools import chain", "list(chain([1], [2]))"),
    ("from math import sqrt", "sqrt(16.0)"),
    ("from statistics import mean", "mean([1, 2, 3])"),
    ("from json import dumps", "dumps({'a': 1})"),
    ("from json.decoder import scanstring", "scanstring('ab\"', 0)"),
    ("from datetime import timedelta", "timedelta(days=1).total_seconds()"),
    ("from decimal import Decimal", "str(Decimal('1.5') * 2)"),
    ("from types import SimpleNamespace", "SimpleNamespace(a=1).a"),
    ("from weakref import WeakSet", "len(WeakSet())"),
    ("from warnings import warn", "callable(warn)"),
    ("from contextvars import ContextVar", "ContextVar('v', default=3).get()"),
    ("from calendar import isleap", "isleap(2024)"),
    ("from operator import itemgetter", "itemgetter(1)([5, 6])"),
    ("from functools import partial", "partial(max, 3)(5)"),
    ("from functools import cmp_to_key", "sorted([3, 1, 2], key=cmp_to_key(lambda a, b: a - b))"),
    ("from copy import deepcopy", "deepcopy([[1]])"),
    ("from zlib import crc32", "crc32(b'abc')"),
    ("from unicodedata import category", "category('a')"),
]

REFUSED = [
    ("from functools import RLock", "RLock() is not None", "NN201"),  # _thread.RLock
    ("from reprlib import get_ident", "get_ident() > 0", "NN201"),  # _thread.get_ident
    ("from keyword import iskeyword", "iskeyword('if')", "NN503"),  # a frozenset's method
    ("from secrets import choice", "choice([1])", "NN503"),  # a hidden SystemRandom's method
    ("from os import getcwd", "getcwd()", "NN201"),
    ("from os.path import join", "join('a', 'b')", "NN201"),
    ("import _functools", "_functools.reduce(max, [1, 2])", "NN201"),
    ("from sys import getsizeof", "getsizeof(1) > 0", "NN201"),
    ("from torch.hub import list as hub_list", "hub_list is not None", "NN201"),
    # the access table refuses these entries of allowed modules: both sides say NN401, on every form
    ("from types import FunctionType", "isinstance(len, FunctionType)", "NN401"),
    ("from contextlib import redirect_stdout", "redirect_stdout is not None", "NN401"),
    ("from operator import attrgetter", "attrgetter('real')(1)", "NN401"),
]

MISSING = [("import nnsight_no_such_pkg", "nnsight_no_such_pkg.VALUE", "NN204")]

# An accelerator imported directly: at module level the import runs only here and the object goes
# by its public name (``operator:add``); inside the trace or a sent function the server runs the
# import, and refuses the private module.
PRIVATE = [("from _operator import add", "add(1, 2)", {"top": None, "lib": None, "body": "NN201", "libfn": "NN201"}),
           ("from _heapq import heappushpop", "heappushpop([1, 3], 2)",
            {"top": None, "lib": None, "body": "NN201", "libfn": "NN201"})]

FORMS = {
    "top": """\
        import nnsight
        {imp}

        def run(model, x):
            with model.trace(x, remote='local'):
                result = nnsight.save({expr})
            return result
        """,
    "body": """\
        import nnsight

        def run(model, x):
            with model.trace(x, remote='local'):
        {imp_body}
                result = nnsight.save({expr})
            return result
        """,
    "lib": """\
        import nnsight
        {imp}

        def helper():
            return {expr}

        def run(model, x):
            with model.trace(x, remote='local'):
                result = nnsight.save(helper())
            return result
        """,
    "libfn": """\
        import nnsight

        def helper():
        {imp_fn}
            return {expr}

        def run(model, x):
            with model.trace(x, remote='local'):
                result = nnsight.save(helper())
            return result
        """,
}

REFUSALS = (DiagnosticError, ServerImportError, ServerRefusal, LoadError)


def _indent(text, spaces):
    return "\n".join(" " * spaces + line for line in text.splitlines())


def _write(directory, name, form, imp, expr):
    text = textwrap.dedent(FORMS[form]).format(
        imp=imp, expr=expr, imp_body=_indent(imp, 8), imp_fn=_indent(imp, 4))
    path = directory / (name + ".py")
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def casedir(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffcases")
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    for name in [n for n in sys.modules if n.startswith("nncase_")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return NNsight(torch.nn.Sequential(torch.nn.Linear(4, 4)))


def _cases():
    out = []
    for i, (imp, expr) in enumerate(ALLOWED):
        out += [pytest.param(form, imp, expr, None, id="ok%d-%s" % (i, form)) for form in FORMS]
    for i, (imp, expr, code) in enumerate(REFUSED):
        out += [pytest.param(form, imp, expr, code, id="no%d-%s" % (i, form)) for form in FORMS]
    for i, (imp, expr, code) in enumerate(MISSING):  # the module-level import would fail here already
        out += [pytest.param(form, imp, expr, code, id="missing%d-%s" % (i, form)) for form in ("body", "libfn")]
    for i, (imp, expr, codes) in enumerate(PRIVATE):
        out += [pytest.param(form, imp, expr, code, id="private%d-%s" % (i, form)) for form, code in codes.items()]
    return out


def _checker_codes(path):
    return sorted({d.code for d in check_file(str(path)) if d.severity == "error"})


def _runtime(name, model):
    module = importlib.import_module(name)
    try:
        return "ok", module.run(model, torch.randn(2, 4))
    except REFUSALS as e:
        codes = sorted({d.code for d in getattr(e, "diagnostics", ())}) or [type(e).__name__]
        return codes, None


@pytest.mark.parametrize("form, imp, expr, code", _cases())
def test_checker_and_remote_local_agree(casedir, model, form, imp, expr, code):
    name = "nncase_%d_%s" % (abs(hash((imp, expr))) % 10 ** 8, form)
    path = _write(casedir, name, form, imp, expr)
    checked = _checker_codes(path)
    verdict, value = _runtime(name, model)
    if code is None:
        assert checked == [], "the checker refuses what the runtime runs: %s" % checked
        assert verdict == "ok"
        namespace = {}
        exec(imp + "\nresult = " + expr, namespace)
        assert value == namespace["result"]
    else:
        assert checked == [code]
        assert verdict == [code], "remote='local' gave %s, the checker %s" % (verdict, checked)


def _server_stdlib_objects():
    """Every public function and class of every standard-library module the server provides."""
    import types

    from compiler import policy

    names = sorted(set(policy.HARMLESS_STDLIB) | {"collections", "math", "time", "typing"}) + ["collections.abc"]
    out = []
    for module in names:
        if module == "__future__" or policy.classify_module(module) != policy.SERVER:
            continue
        mod = importlib.import_module(module)
        for name, obj in sorted(vars(mod).items()):
            if name.startswith("_") or isinstance(obj, types.ModuleType):
                continue
            if isinstance(obj, type) or callable(obj):
                out.append((module, name, obj))
    return out


def test_every_server_stdlib_function_and_class_gets_one_verdict():
    """``from M import name`` for all of them: the checker's code is the closure pass's code.

    The closure side is the capture of the live object (what a trace using the
    name sends); the checker side is the static check of the import line.
    """
    from compiler.analysis import check_source
    from compiler.closure.capture import Closer
    from compiler.closure.errors import CaptureRejected, Where
    from compiler.ir.nodes import SourceLoc

    differences, checked = [], 0
    for module, name, obj in _server_stdlib_objects():
        text = "from %s import %s\n" % (module, name)
        static = sorted({d.code for d in check_source(text) if d.severity == "error"})
        try:
            Closer(remote=True).capture(name, obj, Where(SourceLoc("job.py", 1, 0), text, name))
            live = []
        except CaptureRejected as e:
            live = [e.diagnostic.code]
        checked += 1
        if static != live:
            differences.append((module, name, static, live))
    assert checked > 500 and differences == []
