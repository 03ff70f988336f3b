"""Fuzzing every decoder entry point: random bytes, random trees and mutations of valid payloads.

Only the documented errors may come out -- IRDecodeError (IRLimitError),
IRVersionError, and IRParseError for text -- each example within a second,
and memory stays bounded (small DecodeLimits, and the process high-water mark
checked at the end).
"""
import resource

import msgpack
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.ir import decode, encode, parse_program, print_program
from compiler.ir.errors import IRDecodeError, IRParseError, IRVersionError
from compiler.ir.limits import DecodeLimits
from compiler.ir.request import RESULT_MAGIC, decode_request, decode_result, encode_result
from compiler.ir.values import SentRefs, decode_value, default_classref, encode_value
from wire_attacks import program_text, request_with

LIMITS = DecodeLimits(max_decompressed_bytes=4 << 20, max_tensor_bytes=4 << 20, max_str_bytes=1 << 20,
                      max_bytes_len=4 << 20, max_items=100_000, max_depth=100)
DOCUMENTED = (IRDecodeError, IRVersionError)
FUZZ = settings(max_examples=1000, deadline=1000, database=None, suppress_health_check=list(HealthCheck))

VALUE = ["tuple", ["list", 1, "a", b"b", None, True, 2.5], ["dict", ["k", ["set", 1, 2]]],
         ["tensor", "float32", [2, 2], b"\0" * 16, False, "cpu"], ["ndarray", "<i4", [3], b"\1\0\0\0" * 3],
         ["slice", 1, None, 2], ["ellipsis"], ["dtype", "int64"], ["size", 2, 3], ["int", "-1ffffffffffffffff"],
         ["shared", 0, ["list"]], ["ref", 0], ["complex", 1.0, ["float", "nan"]]]
REQUEST = request_with(value=VALUE, args=VALUE)
PROGRAM = encode(parse_program(program_text({"v": '["list", 1, ["tuple", "x"]]'})))
RESULT = encode_result(["dict", ["out", VALUE]])
TEXT = print_program(parse_program(program_text({"v": '["dict", ["k", ["tensor", "float32", [1], x"00000000", '
                                                      'False, "cpu"]]]'})))
_RSS = {}


@pytest.fixture(autouse=True, scope="module")
def _rss_at_start():
    """The high-water mark when this module's first test starts (not at collection: other files run between)."""
    _RSS["start"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield


def _body_mutation(frame, offset, data):
    """Decompress a frame's body, let hypothesis edit the msgpack, recompress (checksums stay valid)."""
    raw = bytearray(zstandard.ZstdDecompressor().decompress(frame[offset:]))
    for pos, byte in data:
        if raw:
            raw[pos % len(raw)] = byte
    return frame[:offset] + zstandard.ZstdCompressor(level=1).compress(bytes(raw))


def _request_offset(frame):
    return 8 + int.from_bytes(frame[4:8], "big")


def _server_values(request):
    for tree in (request.args, request.kwargs) + tuple(b.value for b in request.program.bindings):
        decode_value(tree, limits=LIMITS)


edits = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=6)


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_every_binary_entry_point(data):
    for magic in (b"", b"NNRQ", b"NNIR", b"NNRS"):
        for entry in (decode_request, decode, decode_result):
            try:
                entry(magic + data, limits=LIMITS)
            except DOCUMENTED:
                pass


@FUZZ
@given(edits, st.integers(0, 40))
def test_mutated_request_frames(edit, cut):
    frame = bytearray(REQUEST)
    for pos, byte in edit:
        frame[pos % len(frame)] = byte
    for payload in (bytes(frame), REQUEST[: len(REQUEST) - cut], _body_mutation(REQUEST, _request_offset(REQUEST), edit)):
        try:
            _server_values(decode_request(payload, limits=LIMITS))
        except DOCUMENTED:
            pass


@FUZZ
@given(edits)
def test_mutated_program_and_result_frames(edit):
    for payload, entry in ((PROGRAM, decode), (RESULT, decode_result)):
        offset = _request_offset(payload) if entry is decode else len(RESULT_MAGIC)
        try:
            out = entry(_body_mutation(payload, offset, edit), limits=LIMITS)
            if entry is decode_result:
                decode_value(out, limits=LIMITS)
        except DOCUMENTED:
            pass


@FUZZ
@given(st.text(max_size=300), edits)
def test_text_form(text, edit):
    mutated = list(TEXT)
    for pos, byte in edit:
        mutated[pos % len(mutated)] = chr(byte)
    for candidate in (text, "nnsight-ir 1\n" + text, "".join(mutated)):
        try:
            program = parse_program(candidate, limits=LIMITS)
            for b in program.bindings:
                decode_value(b.value, limits=LIMITS)
        except DOCUMENTED + (IRParseError,):
            pass


TAGS = ["int", "float", "complex", "list", "tuple", "set", "frozenset", "dict", "odict", "bytearray", "slice",
        "range", "ellipsis", "type", "objref", "enum", "enumvalue", "namedtuple", "object", "state", "tensor",
        "parameter", "dtype", "device", "size", "ndarray", "npscalar", "npdtype", "shared", "ref", "same"]
atoms = (st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 63 - 1) | st.floats(allow_nan=False)
         | st.text(max_size=12) | st.binary(max_size=24) | st.sampled_from(
             ["os:system", "builtins:eval", "torch:save", "float32", "|O", "<f8", "cpu", "meta", "nan", "1f"]))
trees = st.recursive(atoms, lambda inner: st.builds(lambda tag, rest: [tag] + rest, st.sampled_from(TAGS),
                                                    st.lists(inner, max_size=6)) | st.lists(inner, max_size=4),
                     max_leaves=30)


@FUZZ
@given(trees)
def test_random_value_trees(tree):
    sent = SentRefs()
    for kwargs in ({}, {"resolve": sent.resolve, "may_build": sent.may_build}):
        try:
            decode_value(tree, limits=LIMITS, **kwargs)
        except IRDecodeError:
            pass


@FUZZ
@given(trees)
def test_random_result_trees_through_the_wire(tree):
    raw = msgpack.packb({"version": 1, "saved": tree}, use_bin_type=True)
    payload = RESULT_MAGIC + zstandard.ZstdCompressor(level=1).compress(raw)
    try:
        decode_value(decode_result(payload, limits=LIMITS), limits=LIMITS)
    except IRDecodeError:
        pass


def test_fuzzing_kept_memory_bounded():
    """Runs after the fuzz tests in this file: the process high-water mark grew by less than 256 MiB."""
    grew_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - _RSS["start"]
    assert grew_kib < 256 * 1024


def test_valid_payloads_still_decode():
    request = decode_request(REQUEST, limits=LIMITS)
    assert decode_value(request.args, limits=LIMITS)[0] == [1, "a", b"b", None, True, 2.5]
    sent = SentRefs()
    tree = encode_value({"k": 1}, classref=sent.recording(default_classref))
    assert decode_value(tree, resolve=sent.resolve) == {"k": 1}
    assert decode(PROGRAM, limits=LIMITS).bindings[0].value == ["list", 1, ["tuple", "x"]]
    with pytest.raises(IRDecodeError):
        decode_value(["objref", "os:system"], resolve=sent.resolve)
