"""``with tracer.local():`` in the IR: the ``local`` fact, ``CodeUnit.reads``, and what is sent."""
import dataclasses

import pytest

from compiler.frontend import lower
from compiler.frontend.local_blocks import LocalBlockLayoutError, without_local_bodies
from compiler.frontend.lower import lower as lower_libcst
from compiler.ir import FACT_LOCAL, decode, encode, parse_program, print_program
from compiler.ir.errors import IRVerifyError
from compiler.ir.verifier import verify

SOURCE = '''
with model.trace("x", remote=True) as tracer:
    h = model.transformer.h[0].output[0]
    k = 3
    with tracer.invoke("y"):
        with tracer.local():
            print(h.shape)
            new = client_fn(h) * k + client_bias
    model.transformer.h[0].output[0][:] = new
    out = model.lm_head.output.save()
'''


def test_the_block_is_marked_with_what_it_reads():
    program = lower(SOURCE, "t.py", 2)
    local = program.units[2]
    assert local.facts == (FACT_LOCAL,) and set(local.reads) == {"h", "k"} and local.assigned == ("new",)
    assert program.units[1].facts == ("invoke",)
    assert lower_libcst(SOURCE, "t.py", 2).units == program.units  # both frontends agree


def test_text_and_binary_forms_round_trip():
    program = lower(SOURCE, "t.py", 2)
    text = print_program(program)
    assert 'facts=["local"] reads=' in text
    assert parse_program(text) == program and decode(encode(program)) == program
    plain = lower(SOURCE.replace("tracer.local()", "open('f')"), "t.py", 2)
    assert "reads" not in print_program(plain)  # programs without local blocks keep their encoding


def test_the_verifier_keeps_reads_to_local_units():
    program = lower(SOURCE, "t.py", 2)
    bad = dataclasses.replace(program.units[1], reads=("h",))
    with pytest.raises(IRVerifyError, match="reads= is only for a unit"):
        verify(dataclasses.replace(program, units=(program.units[0], bad, program.units[2])))


def test_the_body_and_its_client_names_are_not_sent():
    program = lower(SOURCE, "t.py", 2)
    sent = without_local_bodies(program)
    verify(sent)
    text = "".join(u.source for u in sent.units)
    assert "client_fn" not in text and "client_bias" not in text and "print" not in text
    assert {b.name for b in sent.bindings} >= {"model", "tracer"}
    assert not {"client_fn", "client_bias", "print"} & {b.name for b in sent.bindings}
    assert "client_fn" in program.dynamic_names and "client_fn" not in sent.dynamic_names
    assert sent.units[2].source == "pass\n" and sent.units[2].reads == program.units[2].reads
    # every enclosing unit keeps a `pass` where the body stood, on the same lines
    assert sent.units[0].source.count("\n") == program.units[0].source.count("\n")
    compile(sent.units[0].source, "t.py", "exec")
    compile(sent.units[1].source, "t.py", "exec")


def test_a_body_on_the_header_line_is_refused():
    program = lower(SOURCE.replace("with tracer.local():\n            print(h.shape)\n",
                                   "with tracer.local(): print(h.shape)\n").replace(
        "            new = client_fn(h) * k + client_bias\n", ""), "t.py", 2)
    with pytest.raises(LocalBlockLayoutError, match="on its own lines"):
        without_local_bodies(program)
