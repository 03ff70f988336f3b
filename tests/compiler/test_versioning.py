"""Version gate, upgrader mechanism, parse errors and verifier errors."""
import struct

import msgpack
import pytest

from compiler.ir import (
    IR_VERSION,
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
from compiler.ir import binary, upgraders
from compiler.ir.errors import IRDecodeError, IRError, IRParseError, IRVerifyError, IRVersionError


def program(**kw):
    units = kw.pop("units", (CodeUnit(0, "trace", "y = x + 1\n", SourceLoc("demo.py", 3, 4), None, (2, 2), ("y",)),))
    return Program(Header(producer="nnsight test", python="3.11.0"), units, **kw)


def with_version(data: bytes, version) -> bytes:
    """Rewrite the ir_version of a binary payload's uncompressed header."""
    (size,) = struct.unpack_from(">I", data, 4)
    header = msgpack.unpackb(data[8:8 + size], raw=False)
    header["ir_version"] = version
    packed = msgpack.packb(header, use_bin_type=True)
    return data[:4] + struct.pack(">I", len(packed)) + packed + data[8 + size:]


# -- version gate -----------------------------------------------------------------------


def test_newer_version_refused_in_text():
    text = print_program(program()).replace("nnsight-ir %d" % IR_VERSION, "nnsight-ir %d" % (IR_VERSION + 1), 1)
    with pytest.raises(IRVersionError) as e:
        parse_program(text)
    msg = str(e.value)
    assert "newer nnsight (ir_version %d)" % (IR_VERSION + 1) in msg
    assert "up to ir_version %d" % IR_VERSION in msg and "upgrade nnsight" in msg


def test_newer_version_checked_before_the_rest_is_read():
    with pytest.raises(IRVersionError, match="newer"):
        parse_program("nnsight-ir 99\nthis is a format from the future {{{\n")
    data = encode(program())
    (size,) = struct.unpack_from(">I", data, 4)
    future = with_version(data, 99)
    future = future[: len(future) - len(data) + 8 + size] + b"garbage, not zstd"
    with pytest.raises(IRVersionError, match="newer"):
        decode(future)


def test_newer_version_refused_in_binary():
    data = with_version(encode(program()), IR_VERSION + 1)
    with pytest.raises(IRVersionError, match="newer nnsight .ir_version %d." % (IR_VERSION + 1)):
        decode(data)
    with pytest.raises(IRVersionError):
        binary.read_header(data)
    assert binary.read_header(encode(program())).ir_version == IR_VERSION


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "1.5"])
def test_unknown_versions(bad):
    with pytest.raises(IRVersionError):
        parse_program("nnsight-ir %s\n" % bad)
    value = {"abc": "abc", "1.5": 1.5}.get(bad, None)
    with pytest.raises(IRVersionError):
        decode(with_version(encode(program()), value if value is not None else int(bad)))


def test_upgrader_mechanism(monkeypatch):
    calls = []

    def next_version(record):
        calls.append(record["header"]["ir_version"])
        record["envoys"] = record["envoys"] + ["model.added_by_upgrader"]
        return record

    p = program()
    text, data = print_program(p), encode(p)
    monkeypatch.setattr(upgraders, "IR_VERSION", IR_VERSION + 1)
    with pytest.raises(IRVersionError, match="no upgrader"):
        decode(data)
    monkeypatch.setitem(upgraders.UPGRADERS, IR_VERSION, next_version)
    for q in (decode(data), parse_program(text)):
        assert q.header.ir_version == IR_VERSION + 1 and q.envoys == ("model.added_by_upgrader",)
    assert calls == [IR_VERSION, IR_VERSION]


# -- malformed input --------------------------------------------------------------------


def test_binary_garbage():
    data = encode(program())
    for bad in (b"", b"NNI", b"XXXX" + data[4:], data[:10], data[:-5], data[:8] + b"\xc1" + data[9:]):
        with pytest.raises(IRDecodeError):
            decode(bad)


def test_record_shape_errors_name_the_field():
    record = upgraders.to_record(program())
    record["units"][0]["loc"] = ["demo.py", "three", 4]
    with pytest.raises(IRDecodeError, match=r"units\[0\]\.loc\[1\]: expected an integer"):
        upgraders.from_record(record)


@pytest.mark.parametrize("text, line, col, message", [
    ("", 1, 1, "nnsight-ir"),
    ("hello\n", 1, 1, "nnsight-ir"),
    ("nnsight-ir 1\nbogus 3\n", 2, 1, "unknown statement 'bogus'"),
    ("nnsight-ir 1\nproducer 3\n", 2, 10, "expected '\"'"),
    ("nnsight-ir 1\nproducer \"a\"\nproducer \"b\"\n", 3, 1, "duplicate 'producer'"),
    ("nnsight-ir 1\nenvoy \"unterminated\n", 2, 7, "unterminated string"),
    ("nnsight-ir 1\nenvoy \"bad \\q escape\"\n", 2, 7, "bad escape"),
    ("nnsight-ir 1\nbinding x value [1, 2\n", 2, 22, "expected ','"),
    ("nnsight-ir 1\nbinding x value {[1]: 2}\n", 2, 18, "unhashable"),
    ("nnsight-ir 1\nunit 0 trace at \"f.py\":1:0 parent=none header=0:0 assigned=[]\n", 2, 1, "expected source"),
    ("nnsight-ir 1\nunit 0 trace at \"f.py\":1:0 parent=none header=0:0 assigned=[1]\n  | x\n", 2, 60,
     "list of strings"),
    ("nnsight-ir 1\n  | x\n", 2, 1, "unexpected indented line"),
    ("nnsight-ir 1\nunit 0 trace at \"f.py\":1:0 parent=none header=0:0 assigned=[]\n  | x\n  ? y\n", 4, 1,
     "expected a source line"),
    ("nnsight-ir 1\ndefinition 1 \"f\" module=\"m\" at \"f.py\":1:0\n  | x\n", 2, 12, "out of order"),
])
def test_parse_errors_have_positions(text, line, col, message):
    with pytest.raises(IRParseError) as e:
        parse_program(text)
    assert (e.value.line, e.value.col) == (line, col), str(e.value)
    assert message in str(e.value)
    assert str(e.value).startswith("line %d, col %d: " % (line, col))


def test_printer_and_encoder_reject_non_plain_values():
    p = program(bindings=(Binding("t", "value", (1, 2)),))
    with pytest.raises(IRError, match="tuple"):
        print_program(p)
    with pytest.raises(IRError, match="tuple"):
        encode(p)


# -- verifier ---------------------------------------------------------------------------


def test_valid_program_verifies():
    verify(program(
        units=(
            CodeUnit(0, "trace", "with model.generate() as g:\n    pass\n", SourceLoc("demo.py", 3, 4), None, (2, 2)),
            CodeUnit(1, "block", "pass\n", SourceLoc("demo.py", 4, 8), 0, (3, 3)),
        ),
        bindings=(Binding("model", "model", "model"), Binding("f", "function", 0), Binding("torch", "module", "torch"),
                  Binding("k", "value", ["list", 1]), Binding("x", "runtime")),
        definitions=(Definition("f", "__main__", "def f():\n    return 1\n", SourceLoc("demo.py", 1, 0)),),
        envoys=("model.h.0",),
    ))
    verify(program(units=(CodeUnit(0, "trace", "return x\n", SourceLoc("f.py", 1)),)))  # wrapped by the runtime


def test_verify_reports_every_problem():
    p = Program(
        Header(min_python=(3, 9)),
        (
            CodeUnit(0, "block", "x = (\n", SourceLoc("f.py", 1), 3),
            CodeUnit(5, "block", "y = 1", SourceLoc("f.py", 0), 7, (4, 2)),
        ),
        (Binding("x", "value", (1,)), Binding("x", "runtime"), Binding("2bad", "runtime"),
         Binding("f", "function", 4), Binding("m", "module", "not a module"), Binding("q", "weird")),
    )
    with pytest.raises(IRVerifyError) as e:
        verify(p)
    problems = "\n".join(e.value.problems)
    for expected in [
        "unit 0: the root unit must be of kind 'trace'",
        "unit 0: the root unit must have no parent",
        "unit 0: source does not parse",
        "unit 1: id is 5",
        "unit 1: parent 7 must be the id of an earlier unit",
        "unit 1: header (4, 2)",
        "unit 1: source must end with a newline",
        "unit 1: bad source location",
        "binding 'x': value is a tuple",
        "binding 'x': duplicate name",
        "binding '2bad': name is not an identifier",
        "binding 'f': value 4 must index one of the 0 definitions",
        "binding 'm': value 'not a module' must be a dotted module name",
        "binding 'q': unknown kind 'weird'",
    ]:
        assert expected in problems, expected
    assert str(e.value).startswith("invalid IR program (")


def test_verify_skips_compile_for_newer_grammar():
    src = "match x:\n    case 1:\n        pass\n"
    p = Program(Header(min_python=(99, 0)), (CodeUnit(0, "trace", src + "(((\n", SourceLoc("f.py", 1)),))
    verify(p)  # this Python cannot judge grammar it does not know
