"""The golden IR corpus (tests/golden/ir/corpus/v*/) keeps loading and running.

Every file was written by a client Python of its time (3.9-3.13) and is never regenerated:
each must decode (through the upgraders when its ir_version is older), agree with its text
form, pass the language gate and the verifier, and -- run on the MLP -- save what its JSON says
(float tolerance: other BLAS builds) and exactly what its script saves when run live today.
"""
import json
from pathlib import Path

import pytest

import xvsupport as xv
from compiler.ir import IR_VERSION, decode, parse_program, verify
from compiler.ir.binary import read_header

CORPUS = Path(xv.ROOT) / "tests" / "golden" / "ir" / "corpus"
ENTRIES = sorted(p.with_suffix("") for p in CORPUS.glob("v*/*.nnir"))


def test_corpus_covers_every_version():
    versions = sorted(int(p.name[1:]) for p in CORPUS.glob("v*") if p.is_dir())
    assert versions == list(range(1, IR_VERSION + 1)), "add tests/golden/ir/corpus/v%d (make_corpus.py)" % IR_VERSION
    for v in versions:
        assert len(list((CORPUS / ("v%d" % v)).glob("*.nnir"))) >= 5


def load_expected(path):
    import torch

    with open(str(path) + ".json", encoding="utf-8") as f:
        spec = json.load(f)
    saved = {}
    for name, item in spec["saved"].items():
        if "python" in item:
            saved[name] = item["python"]
        else:
            dtype = getattr(torch, item["dtype"])
            saved[name] = torch.tensor(item["values"], dtype=torch.float64).reshape(item["shape"]).to(dtype)
    return spec, saved


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda p: "%s/%s" % (p.parent.name, p.name))
def test_corpus_program_loads_and_runs(entry, mlp):
    import torch

    model, x, calls = mlp
    data = (entry.parent / (entry.name + ".nnir")).read_bytes()
    text = (entry.parent / (entry.name + ".txt")).read_text(encoding="utf-8")
    version = int(entry.parent.name[1:])
    assert read_header(data).ir_version == version  # stored as written; upgraded on load
    program = decode(data)
    assert parse_program(text) == program
    verify(program)
    assert program.header.ir_version == IR_VERSION
    spec, expected = load_expected(entry)
    assert program.header.python == spec["client"]
    run = xv.run_local_server if spec["mode"] == "local_server" else xv.run_ir
    got = run(data, model, x)
    assert calls, "the model did not run"
    assert set(got) == set(expected)
    for name, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert got[name].dtype == value.dtype and got[name].shape == value.shape
            torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-6, msg=name)
        else:
            assert got[name] == value, name
    source = (entry.parent / (entry.name + ".py")).read_text(encoding="utf-8")
    line = next(i for i, l in enumerate(source.splitlines(), 1) if l.startswith("with model.trace"))
    script = xv.Script(source, line, tuple(expected), filename=entry.name + ".py")
    assert xv.same(got, xv.run_live(script, model, x)) is None


def test_gradient_facts_by_version():
    """Programs of versions before 3 load with the ``backward`` fact unknown (their producers never
    looked for gradient sessions); version 3 programs know it, and the gradient session carries it."""
    from compiler.ir import FACT_BACKWARD

    for entry in ENTRIES:
        program = decode((entry.parent / (entry.name + ".nnir")).read_bytes())
        assert program.knows(FACT_BACKWARD) == (int(entry.parent.name[1:]) >= 3), entry
    session = decode((CORPUS / "v3" / "gradient_session.nnir").read_bytes())
    assert [u.facts for u in session.units] == [(), (FACT_BACKWARD,)]


def test_corpus_runs_through_an_upgrader(monkeypatch, mlp):
    """Simulate the next format bump: every corpus file goes through an upgrader and still runs."""
    import torch

    from compiler.ir import upgraders, verifier
    model, x, _ = mlp
    seen = []

    def upgrade(record):  # a stand-in v(N) -> v(N+1) step: records the call, keeps the meaning
        seen.append(record["header"]["python"])
        return record

    monkeypatch.setattr(upgraders, "IR_VERSION", IR_VERSION + 1)
    monkeypatch.setattr(verifier, "IR_VERSION", IR_VERSION + 1)
    monkeypatch.setitem(upgraders.UPGRADERS, IR_VERSION, upgrade)
    for entry in ENTRIES:
        data = (entry.parent / (entry.name + ".nnir")).read_bytes()
        assert decode(data).header.ir_version == IR_VERSION + 1
        spec, expected = load_expected(entry)
        run = xv.run_local_server if spec["mode"] == "local_server" else xv.run_ir
        got = run(data, model, x)
        for name, value in expected.items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert len(seen) >= len(ENTRIES)
