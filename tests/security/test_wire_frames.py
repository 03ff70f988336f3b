"""Edited binary frames, compression and allocation bombs, and hand-written IR text.

Every payload is made by hand (bytes flipped, lengths changed, bodies
re-packed) and must end in a documented error -- IRDecodeError (IRLimitError
for a limit), IRVersionError for a version, IRParseError for text -- with no
trace and bounded memory.
"""
import struct

import msgpack
import pytest
import zstandard

from compiler.ir import decode, encode, parse_program
from compiler.ir.binary import MAGIC as PROGRAM_MAGIC
from compiler.ir.errors import IRDecodeError, IRLimitError, IRParseError, IRVersionError
from compiler.ir.framing import wrap
from compiler.ir.limits import DecodeLimits
from compiler.ir.request import REQUEST_MAGIC, decode_request, decode_result
from wire_attacks import bomb_frame, no_trace, program_text, raw_request, request_with, result_bytes

GOOD = request_with(value=["list", 1, 2])
HEADER = {"ir_version": 1, "producer": "", "python": "", "min_python": [3, 9], "features": []}


def _header_len(data):
    return struct.unpack(">I", data[4:8])[0]


def _body(data):
    return data[8 + _header_len(data):]


def _frame(body_obj):
    return raw_request(HEADER, body_obj)


def _fix_body(model="m", program=None):
    prog = {"units": [], "bindings": [], "definitions": [], "envoys": [], "dynamic": True}
    return {"program": prog if program is None else program, "model": model, "method": "trace",
            "args": ["tuple"], "kwargs": ["dict"]}


FRAME_ATTACKS = {
    "magic swapped for a program's": (PROGRAM_MAGIC + GOOD[4:], IRDecodeError, "bad magic"),
    "not bytes at all": ("NNRQ" + "x" * 20, IRDecodeError, "expected bytes"),
    "empty": (b"", IRDecodeError, "bad magic"),
    "header length 4 GiB": (GOOD[:4] + b"\xff\xff\xff\xff" + GOOD[8:], IRLimitError, "max_header_bytes"),
    "header length past the end": (GOOD[:4] + struct.pack(">I", len(GOOD)) + GOOD[8:], IRDecodeError, "truncated"),
    "header cut short": (GOOD[:6], IRDecodeError, "truncated"),
    "header not a map": (wrap(REQUEST_MAGIC, [1, 2], _body(GOOD)), IRDecodeError, "not a map"),
    "header version from the future": (wrap(REQUEST_MAGIC, dict(HEADER, ir_version=10 ** 6), _body(GOOD)),
                                       IRVersionError, "newer nnsight"),
    "header version a string": (wrap(REQUEST_MAGIC, dict(HEADER, ir_version="os:system"), _body(GOOD)),
                                IRVersionError, "must be an integer"),
    "body bytes flipped": (GOOD[:-6] + bytes(b ^ 0xFF for b in GOOD[-6:]), IRDecodeError, "corrupt"),
    "body truncated": (GOOD[:-10], IRDecodeError, "corrupt"),
    "body not zstd": (GOOD[:8 + _header_len(GOOD)] + b"PK\x03\x04 not a zstd frame", IRDecodeError, "corrupt"),
    "body a list": (_frame([1, 2, 3]), IRDecodeError, "not a map with a program"),
    "body model not a string": (_frame(_fix_body(model=["objref", "os:system"])), IRDecodeError,
                                "'model' must be a string"),
    "body program a string": (_frame(_fix_body(program="os:system")), IRDecodeError, "not a map with a program"),
    "body program fields wrong": (_frame(_fix_body(program={"units": "x"})), IRDecodeError, ""),
    "bomb: 3 GB declared in the frame": (wrap(REQUEST_MAGIC, HEADER, bomb_frame(3 << 30, declare=True)),
                                         IRLimitError, "max_decompressed_bytes"),
    "bomb: declared size lies (small)": (wrap(REQUEST_MAGIC, HEADER, bomb_frame(8 << 20)[:4] + b"\x20\x00"
                                              + bomb_frame(8 << 20)[6:]), IRDecodeError, "corrupt"),
    "msgpack ext type": (wrap(REQUEST_MAGIC, HEADER, zstandard.ZstdCompressor().compress(
        msgpack.packb(msgpack.ExtType(1, b"os.system")))), IRDecodeError, "corrupt"),
    "msgpack array claiming 4G items": (wrap(REQUEST_MAGIC, HEADER, zstandard.ZstdCompressor().compress(
        b"\xdd\xff\xff\xff\xff" + b"\xc0" * 16)), IRLimitError, "max_array_len"),
    "msgpack str claiming 4 GB": (wrap(REQUEST_MAGIC, HEADER, zstandard.ZstdCompressor().compress(
        b"\xdb\xff\xff\xff\xff" + b"a" * 16)), IRDecodeError, "incomplete"),
    "msgpack str over max_str_bytes": (request_with(value="a" * 300), IRLimitError, "max_str_bytes=256"),
    "msgpack map claiming 4G entries": (wrap(REQUEST_MAGIC, HEADER, zstandard.ZstdCompressor().compress(
        b"\xdf\xff\xff\xff\xff" + b"\xc0" * 16)), IRLimitError, "max_map_len"),
    "msgpack nested 5000 deep": (wrap(REQUEST_MAGIC, HEADER, zstandard.ZstdCompressor().compress(
        b"\x91" * 5000 + b"\xc0")), IRDecodeError, ""),
    "header msgpack nested 5000 deep": (REQUEST_MAGIC + struct.pack(">I", 5001) + b"\x91" * 5000 + b"\xc0",
                                        IRDecodeError, ""),
}


@pytest.mark.parametrize("name", sorted(FRAME_ATTACKS))
def test_edited_request_frame(name, tmp_path):
    payload, error, message = FRAME_ATTACKS[name]
    limits = DecodeLimits(max_str_bytes=256) if "max_str_bytes" in name else None
    with no_trace(tmp_path):
        with pytest.raises(error) as e:
            decode_request(payload, limits=limits)
    assert isinstance(e.value, error) and message in str(e.value)


def test_undeclared_bomb_stops_at_the_cap(tmp_path):
    """A frame that does not declare its size is streamed and cut at max_decompressed_bytes."""
    payload = wrap(REQUEST_MAGIC, HEADER, bomb_frame(256 << 20))  # 256 MiB of zeros in ~8 kB
    assert len(payload) < 10_000
    with no_trace(tmp_path, bound=40 << 20):
        with pytest.raises(IRLimitError, match="max_decompressed_bytes=16777216") as e:
            decode_request(payload, limits=DecodeLimits(max_decompressed_bytes=16 << 20))
    assert "pass limits=DecodeLimits(max_decompressed_bytes=...)" in str(e.value)
    assert e.value.limit == "max_decompressed_bytes"


def test_program_frames_are_bounded_too(tmp_path):
    good = encode(parse_program(program_text({"v": '["list", 1]'})))
    with no_trace(tmp_path):
        with pytest.raises(IRLimitError, match="max_decompressed_bytes"):
            decode(wrap(PROGRAM_MAGIC, HEADER, bomb_frame(3 << 30, declare=True)))
        with pytest.raises(IRLimitError, match="max_header_bytes"):
            decode(good[:4] + b"\x7f\xff\xff\xff" + good[8:])
        with pytest.raises(IRDecodeError, match="bad magic"):
            decode(REQUEST_MAGIC + good[4:])
        with pytest.raises(IRLimitError, match="max_decompressed_bytes"):
            decode(wrap(PROGRAM_MAGIC, HEADER, bomb_frame(64 << 20)), limits=DecodeLimits(max_decompressed_bytes=1 << 20))
    assert decode(good).bindings[0].value == ["list", 1]


def test_result_frames_are_bounded(tmp_path):
    with no_trace(tmp_path):
        with pytest.raises(IRLimitError, match="max_decompressed_bytes"):
            decode_result(b"NNRS" + bomb_frame(3 << 30, declare=True))
        with pytest.raises(IRDecodeError, match="bad magic"):
            decode_result(b"NNRQ" + result_bytes(["dict"])[4:])
        with pytest.raises(IRDecodeError, match="version"):
            decode_result(result_bytes(["dict"], version=["objref", "os:system"]))


TEXT_ATTACKS = {
    "literal nested 1000 deep": (program_text({"v": "[" * 1000 + "]" * 1000}), IRLimitError, "max_depth"),
    "dict literal nested deep": (program_text({"v": '{"a": ' * 800 + "1" + "}" * 800}), IRLimitError, "max_depth"),
    "unterminated string": (program_text({"v": '"os:system'}), IRParseError, ""),
    "version from the future": ("nnsight-ir 999\n", IRVersionError, "newer"),
    "not text": (b"nnsight-ir 1\n", IRParseError, "str"),
    "unknown statement": (program_text() + "import os\n", IRParseError, "unknown statement"),
    "hex literal not hex": (program_text({"v": 'x"zz"'}), IRParseError, ""),
    "integer too long": (program_text({"v": "9" * 5000}), IRParseError, "too long"),
}


@pytest.mark.parametrize("name", sorted(TEXT_ATTACKS))
def test_hand_written_ir_text(name, tmp_path):
    text, error, message = TEXT_ATTACKS[name]
    with no_trace(tmp_path):
        with pytest.raises(error) as e:
            parse_program(text)
    assert message in str(e.value)


def test_text_length_limit(tmp_path):
    text = program_text({"v": '"%s"' % ("a" * 10_000)})
    with no_trace(tmp_path):
        with pytest.raises(IRLimitError, match="max_str_bytes"):
            parse_program(text, limits=DecodeLimits(max_str_bytes=4096))
    assert parse_program(text).bindings[0].value == "a" * 10_000
