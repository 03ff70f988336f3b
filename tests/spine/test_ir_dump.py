"""NNSIGHT_IR_DUMP writes each compiled trace's IR text (and remote requests) to a folder."""
import torch

from compiler.ir import parse_program
from nnsight import NNsight
from nnsight.tracing.compile import clear_cache


def test_ir_dump_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("NNSIGHT_IR_DUMP", str(tmp_path))
    clear_cache()
    model = NNsight(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    x = torch.ones(1, 2)
    with model.trace(x) as tracer:
        out = model[0].output.save()
    dumped = list(tmp_path.glob("*.nnir.txt"))
    assert len(dumped) == 1 and dumped[0].name.startswith("test_ir_dump.py-")
    assert parse_program(dumped[0].read_text()) == tracer.ir
    with model.trace(x, remote="local"):
        out = model[0].output.save()
    requests = list(tmp_path.glob("*.request.*.txt"))
    assert len(requests) == 1 and "model[0].output.save()" in requests[0].read_text()
    assert torch.equal(out, model._module(x))
