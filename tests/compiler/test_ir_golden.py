"""Golden files: the text and binary forms of a fixed program must not drift.

The files of a released version (``simple_v1.*``, ``simple_v2.*``) are frozen: they must keep
loading, through the upgraders, as the program the current runtime sees. The current version's files
(``simple_v3.*``) are regenerated after an intentional format change with ``UPDATE_GOLDEN=1``
(review the diff: a changed format needs an IR_VERSION bump and an upgrader).
"""
import dataclasses
import os
from pathlib import Path

import pytest

from compiler.ir import (
    Binding,
    CodeUnit,
    Definition,
    Header,
    Program,
    SourceLoc,
    decode,
    encode,
    parse_program,
    print_program,
    verify,
)

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "ir"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

ROOT = '''\
h = model.transformer.h[0].output[0]
with model.generate(max_new_tokens=3) as g:\t# tab before the comment
    tokens = g.result
out = normalize(h) * cfg["scale"]  \n\
label = "Grüße → 世界 | ! \\\\"

print(len(tokens), label)
'''

PROGRAM_V1 = Program(
    header=Header(ir_version=1, producer="nnsight 0.9.0", python="3.11.7", min_python=(3, 9),
                  features=(("parenthesized context managers", 7),)),
    units=(
        CodeUnit(0, "trace", ROOT, SourceLoc("demo.py", 12, 4), None, (11, 11), ("h", "tokens", "out", "label")),
        CodeUnit(1, "block", "tokens = g.result\n", SourceLoc("demo.py", 14, 8), 0, (13, 13), ("tokens",)),
    ),
    bindings=(
        Binding("model", "model", "model"),
        Binding("g", "tracer"),
        Binding("normalize", "function", 0),
        Binding("cfg", "value", ["dict", ["scale", 0.5], ["layers", ["list", 0, 1, -0.0]],
                                 ["bias", ["tensor", "float32", [2], b"\x00\x00\x80?\x00\x00\x00@", False, "cpu"]],
                                 ["tag", b"abc"], ["eps", ["float", "inf"]], ["big", ["int", "0x1" + "0" * 20]]]),
        Binding("torch", "module", "torch"),
        Binding("F", "object", "torch.nn.functional:gelu"),
        Binding("len", "builtin", "len"),
        Binding("print", "runtime"),
    ),
    definitions=(
        Definition("normalize", "mymethods", "def normalize(x):\n    return F(x) / x.norm()\n",
                   SourceLoc("mymethods.py", 3, 0),
                   (Binding("F", "object", "torch.nn.functional:gelu"),)),
    ),
    envoys=("model.transformer.h.0",),
    dynamic=False,
)




def _at(program: Program, version: int, **changes) -> Program:
    return dataclasses.replace(program, header=dataclasses.replace(program.header, ir_version=version), **changes)


# Version 2 added the frontend's access facts; the v1 program loads with the conservative ones.
# (the nested unit's `as` target is read from its header line, as version 1 runtimes did)
# Version 3 added the "backward" unit fact: older programs load with it listed as unknown.
V1_UPGRADED = _at(PROGRAM_V1, 3, units=(PROGRAM_V1.units[0], dataclasses.replace(PROGRAM_V1.units[1], target="g")),
                  dynamic=True, dynamic_names=(), unknown_facts=("backward",))
PROGRAM_V2 = _at(V1_UPGRADED, 2, dynamic=False, unknown_facts=(),
                 dynamic_names=("cfg", "g", "label", "len", "normalize", "print", "tokens"))
V2_UPGRADED = _at(PROGRAM_V2, 3, unknown_facts=("backward",))

# The current version's program adds a gradient session (a unit with the "backward" fact).
ROOT_V3 = ROOT + "with out.sum().backward():\n    grad = h.grad.save()\n"
PROGRAM = _at(PROGRAM_V2, 3, units=(
    dataclasses.replace(PROGRAM_V2.units[0], source=ROOT_V3, assigned=PROGRAM_V2.units[0].assigned + ("grad",)),
    PROGRAM_V2.units[1],
    CodeUnit(2, "block", "grad = h.grad.save()\n", SourceLoc("demo.py", 20, 8), 0, (19, 19), ("grad",),
             facts=("backward",)),
))


def _check(path: Path, actual: bytes) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(actual)
    if not path.exists():
        pytest.fail("missing golden file %s (run with UPDATE_GOLDEN=1)" % path)
    assert path.read_bytes() == actual, "%s changed; rerun with UPDATE_GOLDEN=1 if intended" % path.name


def test_golden_program_is_valid():
    verify(PROGRAM)


def test_golden_text():
    path = GOLDEN / "simple_v3.txt"
    _check(path, print_program(PROGRAM).encode("utf-8"))
    text = path.read_bytes().decode("utf-8")
    assert parse_program(text) == PROGRAM
    assert print_program(parse_program(text)) == text


def test_golden_binary():
    path = GOLDEN / "simple_v3.nnir"
    _check(path, encode(PROGRAM))
    assert decode(path.read_bytes()) == PROGRAM


def test_released_v1_files_load_through_the_upgrader():
    text = (GOLDEN / "simple_v1.txt").read_bytes().decode("utf-8")
    assert text.startswith("nnsight-ir 1\n")
    assert parse_program(text) == V1_UPGRADED
    assert decode((GOLDEN / "simple_v1.nnir").read_bytes()) == V1_UPGRADED
    verify(V1_UPGRADED)


def test_released_v2_files_load_with_the_backward_fact_unknown():
    """A v2 producer never looked for gradient sessions: the upgraded program says so instead of
    guessing from source text (the runtime then relies on the checks made while the job runs)."""
    text = (GOLDEN / "simple_v2.txt").read_bytes().decode("utf-8")
    assert text.startswith("nnsight-ir 2\n")
    assert parse_program(text) == V2_UPGRADED
    assert decode((GOLDEN / "simple_v2.nnir").read_bytes()) == V2_UPGRADED
    verify(V2_UPGRADED)
    assert not V2_UPGRADED.knows("backward") and PROGRAM.knows("backward")
    assert "unknown-fact backward\n" in print_program(V2_UPGRADED)
    assert parse_program(print_program(V2_UPGRADED)) == V2_UPGRADED  # the text form keeps it
    assert decode(encode(V2_UPGRADED)) == V2_UPGRADED  # and so does the binary form


def test_the_backward_fact_and_unknown_facts_are_verified():
    from compiler.ir.errors import IRVerifyError

    cases = [
        (dataclasses.replace(PROGRAM, unknown_facts=("backward",)), "yet a unit has it"),
        (dataclasses.replace(PROGRAM, unknown_facts=("grads",)), "is not a unit fact"),
        (dataclasses.replace(V2_UPGRADED, unknown_facts=("backward", "backward")), "not unique"),
        (dataclasses.replace(PROGRAM, units=(dataclasses.replace(PROGRAM.units[0], facts=("backward",)),)
                             + PROGRAM.units[1:]), "cannot be a gradient session"),
    ]
    for program, message in cases:
        with pytest.raises(IRVerifyError, match=message):
            verify(program)


def test_v1_upgrader_reads_the_invoke_fact_from_the_header_lines():
    text = (GOLDEN / "simple_v1.txt").read_bytes().decode("utf-8")
    text = text.replace("with model.generate(max_new_tokens=3) as g:", "with g.invoke('x'):")
    program = parse_program(text)
    assert [u.facts for u in program.units] == [(), ("invoke",)]
