"""The trace really runs through the IR: programs built by the frontend alone, printed to
text and parsed back, or encoded to bytes and decoded, give the same results as a live trace."""
import textwrap

import torch

from compiler.frontend import lower
from compiler.ir import decode, encode, parse_program, print_program
from nnsight import NNsight
from runtime.builder import CompiledProgram

SOURCE = textwrap.dedent('''\
    import torch

    with model.trace(x) as tracer:
        first = model[0].output.save()
        model[2].output[:] = model[2].output * scale
        total = torch.stack([first.sum(), model.output.sum()]).save()
    ''')


def make():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4), torch.nn.Tanh())
    return NNsight(net.eval()), torch.randn(2, 4)


def live(model, x, scale):
    with model.trace(x) as tracer:
        first = model[0].output.save()
        model[2].output[:] = model[2].output * scale
        total = torch.stack([first.sum(), model.output.sum()]).save()
    return tracer, {"first": first, "total": total}


def run(model, x, program, scale):
    tracer = model.trace(x)
    return tracer.run_program(CompiledProgram(program), {"model": model, "torch": torch, "scale": scale})


def test_frontend_only_program_printed_and_parsed_runs_like_a_live_trace():
    model, x = make()
    program = lower(SOURCE, "example.py", 3)
    text = print_program(program)
    parsed = parse_program(text)
    assert parsed == program
    assert "model[0].output.save()" in text and "example.py" in text
    via_text = run(model, x, parsed, 0.5)
    _, expected = live(model, x, 0.5)
    assert set(via_text) == {"first", "total"}
    for name in expected:
        assert torch.equal(via_text[name], expected[name])


def test_binary_round_trip_runs_the_same():
    model, x = make()
    program = lower(SOURCE, "example.py", 3)
    decoded = decode(encode(program))
    assert decoded == program
    out = run(model, x, decoded, -2.0)
    _, expected = live(model, x, -2.0)
    assert torch.equal(out["total"], expected["total"])


def test_live_trace_exposes_its_ir_and_a_different_body_changes_results():
    model, x = make()
    tracer, expected = live(model, x, 3.0)
    assert "model[2].output[:] = model[2].output * scale" in tracer.ir.units[0].source
    assert str(tracer.ir) == print_program(tracer.ir)  # print(tracer.ir) shows the text form
    # Editing the IR text (not the Python source) changes what runs: proof the runtime executes the IR.
    edited = parse_program(print_program(tracer.ir).replace("model[2].output * scale", "model[2].output * 0"))
    out = run(model, x, edited, 3.0)
    zeroed = torch.nn.Sequential(*list(model._module)[3:])(torch.zeros(2, 4))
    assert torch.allclose(out["total"][1], zeroed.sum())
    assert not torch.allclose(out["total"], expected["total"])
