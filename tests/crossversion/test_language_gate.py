"""Language-level gate: a program needing a newer Python than the runtime's is refused at load time,
with a message naming the feature, the line and both versions, before any model code runs."""
import sys

import pytest

import xvsupport as xv
from compiler.frontend import lower
from compiler.ir import decode
from runtime.builder import CompiledProgram
from runtime.gate import LanguageLevelError, check

RUNTIME = "%d.%d.%d" % sys.version_info[:3]
needs_311 = pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the server runtime is CPython 3.11")

PEP695 = xv.script("def first[T](items: list[T]) -> T:\n    return items[0]\n\n"
                   "v = first([model[0].output]).save()\n", saved=["v"])
PEP695_HELPER = xv.script("v = first([model[0].output]).save()\n",
                          helpers="def first[T](items: list[T]) -> T:\n    return items[0]", saved=["v"], closure=True)
PEP701 = xv.script('h = model[0].output\nlabel = f"{"-".join(["a", "b"])}"\nv = (h * len(label)).save()\n',
                   saved=["v"])
PEP696 = xv.script("def same[T = float](t: T) -> T:\n    return t\n\nv = same(model[1].output).save()\n",
                   saved=["v"])


def refused(run, model, calls, data, *args):
    with pytest.raises(LanguageLevelError) as info:
        run(data, model, *args)
    assert calls == [], "the model ran before the program was refused"
    return str(info.value)


# -- the acceptance case: PEP 695 compiled on 3.12, run on 3.11 ------------------------------------


@pytest.mark.crossversion
@needs_311
def test_pep695_from_312_refused_before_the_model_runs(clients, mlp):
    model, x, calls = mlp
    data = clients.compile([PEP695], versions=["3.12"])["3.12"][0]
    header = decode(data).header
    assert header.min_python == (3, 12) and header.features == (("type parameters", 5),)
    message = refused(xv.run_ir, model, calls, data, x)
    assert message == (
        "this program (compiled on Python %s) needs Python 3.12 (type parameters at %s:5) but this "
        "runtime is Python %s; compile it with syntax that Python 3.11 accepts (rewrite those lines), "
        "or run it on a 3.12 runtime" % (clients.clients["3.12"].python, PEP695.filename, RUNTIME))
    assert refused(xv.run_local_server, model, calls, data, x) == message  # the remote='local' server


@pytest.mark.crossversion
@needs_311
def test_pep695_helper_captured_by_value_refused_by_the_local_server(clients, mlp):
    """A 3.12-only helper carried as a Definition raises the header's level too (closure)."""
    model, x, calls = mlp
    data = clients.compile([PEP695_HELPER], versions=["3.12"])["3.12"][0]
    program = decode(data)
    assert program.header.min_python == (3, 12)
    assert program.header.features == (("type parameters", 4),)  # line of the def in the script
    assert any("def first[T]" in d.source for d in program.definitions)
    message = refused(xv.run_local_server, model, calls, data, x)
    assert "type parameters at %s:4" % PEP695_HELPER.filename in message and "Python %s" % RUNTIME in message


@pytest.mark.crossversion
@needs_311
def test_other_newer_features_refused(clients, mlp):
    model, x, calls = mlp
    got = clients.compile([PEP701, PEP696], versions=["3.12", "3.13"])
    message = refused(xv.run_ir, model, calls, got["3.12"][0], x)
    assert "needs Python 3.12 (f-string nesting (PEP 701) at %s:6)" % PEP701.filename in message
    assert got["3.12"][1] is not None  # 3.12's libcst still parses 3.13 syntax; the header says 3.13
    message = refused(xv.run_ir, model, calls, got["3.13"][1], x)
    assert "needs Python 3.13 (" in message and "type parameter defaults at %s:5" % PEP696.filename in message
    assert "type parameters at %s:5" % PEP696.filename in message


@pytest.mark.crossversion
def test_newer_syntax_compiled_on_an_older_client_is_gated_the_same(clients, mlp):
    """The level comes from the code, not from the client: 3.9's compile of PEP 695 says 3.12."""
    model, x, calls = mlp
    data = clients.compile([PEP695], versions=["3.9"])["3.9"][0]
    assert decode(data).header.min_python == (3, 12)
    if sys.version_info < (3, 12):
        refused(xv.run_ir, model, calls, data, x)


@pytest.mark.crossversion
def test_features_up_to_the_runtime_level_run(clients, mlp):
    """match (3.10) and except* (3.11) compiled on every client run on the 3.11 runtime."""
    model, x, calls = mlp
    s = xv.script("h = model[0].output\nmatch h.shape:\n    case (3, n):\n        v = (h * n).save()\n"
                  "try:\n    raise ExceptionGroup('g', [ValueError(1)])\nexcept* ValueError:\n"
                  "    w = (h + 1).save()\n", saved=["v", "w"])
    compiled = clients.compile([s])
    for version, blobs in compiled.items():
        header = decode(blobs[0]).header
        assert header.min_python == (3, 11), version
        assert [f for f, _ in header.features] == ["match statement", "except*"]
        got = xv.run_ir(blobs[0], model, x)
        assert xv.same(got, xv.run_live(s, model, x)) is None


# -- the gate itself (no other Python needed) ------------------------------------------------------


def test_gate_message_names_feature_line_and_versions():
    src = "with model.trace(x):\n    h = 1\n    match h:\n        case 1:\n            pass\n"
    program = lower(src, "script.py", 1)
    check(program, runtime=(3, 10, 4))  # new enough
    with pytest.raises(LanguageLevelError) as info:
        check(program, runtime=(3, 9, 18))
    e = info.value
    assert e.required == (3, 10) and e.runtime == (3, 9) and e.features == (("match statement", 3),)
    assert str(e).startswith("this program (compiled on Python %s) needs Python 3.10 "
                             "(match statement at script.py:3) but this runtime is Python 3.9.18;" % RUNTIME)
    assert str(e).endswith("or run it on a 3.10 runtime")


def test_gate_runs_when_a_program_is_built():
    import dataclasses

    program = lower("with model.trace(x):\n    y = 1\n", "s.py", 1)
    future = dataclasses.replace(program, header=dataclasses.replace(
        program.header, min_python=(3, 99), features=(("some future syntax", 2),)))
    with pytest.raises(LanguageLevelError, match=r"needs Python 3\.99 \(some future syntax at s\.py:2\)"):
        CompiledProgram(future)
    CompiledProgram(program)
