"""Golden files: the text and binary forms of a fixed program must not drift.

The files of a released version (``simple_v1.*``) are frozen: they must keep loading, through
the upgraders, as the program the current runtime sees. The current version's files
(``simple_v2.*``) are regenerated after an intentional format change with ``UPDATE_GOLDEN=1``
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


# Version 2 added the frontend's access facts; the v1 program loads with the conservative ones.
# (the nested unit's `as` target is read from its header line, as version 1 runtimes did)
V1_UPGRADED = dataclasses.replace(PROGRAM_V1, header=dataclasses.replace(PROGRAM_V1.header, ir_version=2),
                                  units=(PROGRAM_V1.units[0], dataclasses.replace(PROGRAM_V1.units[1], target="g")),
                                  dynamic=True, dynamic_names=())
PROGRAM = dataclasses.replace(V1_UPGRADED, dynamic=False,
                              dynamic_names=("cfg", "g", "label", "len", "normalize", "print", "tokens"))


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
    path = GOLDEN / "simple_v2.txt"
    _check(path, print_program(PROGRAM).encode("utf-8"))
    text = path.read_bytes().decode("utf-8")
    assert parse_program(text) == PROGRAM
    assert print_program(parse_program(text)) == text


def test_golden_binary():
    path = GOLDEN / "simple_v2.nnir"
    _check(path, encode(PROGRAM))
    assert decode(path.read_bytes()) == PROGRAM


def test_released_v1_files_load_through_the_upgrader():
    text = (GOLDEN / "simple_v1.txt").read_bytes().decode("utf-8")
    assert text.startswith("nnsight-ir 1\n")
    assert parse_program(text) == V1_UPGRADED
    assert decode((GOLDEN / "simple_v1.nnir").read_bytes()) == V1_UPGRADED
    verify(V1_UPGRADED)


def test_v1_upgrader_reads_the_invoke_fact_from_the_header_lines():
    text = (GOLDEN / "simple_v1.txt").read_bytes().decode("utf-8")
    text = text.replace("with model.generate(max_new_tokens=3) as g:", "with g.invoke('x'):")
    program = parse_program(text)
    assert [u.facts for u in program.units] == [(), ("invoke",)]
