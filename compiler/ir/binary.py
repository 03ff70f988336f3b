"""Binary form of a Program: magic, uncompressed header, zstd-compressed body.

Layout::

    b"NNIR"                      magic
    uint32 big-endian            length H of the header
    H bytes                      msgpack map: the header record (``ir_version`` first)
    rest                         zstd frame of a msgpack map: the other record fields

The header (and so ``ir_version``) is readable without decompressing the body,
and the version gate runs before the body is touched. Output is deterministic:
records have a fixed key order, msgpack picks the smallest encoding of every
value, and zstd runs single-threaded at a fixed level.
"""
from __future__ import annotations

import struct
from typing import Any, Dict, Tuple

import msgpack
import zstandard

from .errors import IRDecodeError, IRError
from .nodes import Header, Program
from .upgraders import check_version, from_record, to_record, upgrade
from .values import plain_problem

MAGIC = b"NNIR"
ZSTD_LEVEL = 9
_LEN = struct.Struct(">I")


def encode(p: Program) -> bytes:
    """The binary form of ``p`` (same program -> same bytes)."""
    record = to_record(p)
    for b in p.bindings + tuple(g for d in p.definitions for g in d.globals + d.cells + d.attrs):
        problem = plain_problem(b.value, "value")
        if problem:
            raise IRError("cannot encode binding %r: %s" % (b.name, problem))
    header = _pack(record.pop("header"))
    body = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compress(_pack(record))
    return MAGIC + _LEN.pack(len(header)) + header + body


def decode(data: bytes) -> Program:
    """Parse a binary program; raise IRVersionError for newer versions, IRDecodeError if malformed."""
    header, offset = _read_header(data)
    check_version(header.get("ir_version"))
    try:
        body = zstandard.ZstdDecompressor().decompress(bytes(data[offset:]))
    except zstandard.ZstdError as e:
        raise IRDecodeError("IR payload body is corrupt: %s" % e) from e
    record = _unpack(body, "body")
    if not isinstance(record, dict):
        raise IRDecodeError("IR payload body is not a map")
    record = dict(record, header=header)
    return from_record(upgrade(record))


def read_header(data: bytes) -> Header:
    """The header of a binary program, without decompressing its body (version-checked)."""
    header, _ = _read_header(data)
    check_version(header.get("ir_version"))
    return from_record({"header": header, "units": [], "bindings": [], "definitions": [],
                        "envoys": [], "dynamic": True}).header


def _read_header(data: bytes) -> Tuple[Dict[str, Any], int]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise IRDecodeError("expected bytes, got %s" % type(data).__name__)
    if data[: len(MAGIC)] != MAGIC:
        raise IRDecodeError("not an nnsight IR payload (bad magic %r, expected %r)" % (bytes(data[:4]), MAGIC))
    if len(data) < len(MAGIC) + _LEN.size:
        raise IRDecodeError("IR payload truncated in its header")
    (size,) = _LEN.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    if len(data) < start + size:
        raise IRDecodeError("IR payload truncated in its header")
    header = _unpack(bytes(data[start: start + size]), "header")
    if not isinstance(header, dict):
        raise IRDecodeError("IR payload header is not a map")
    return header, start + size


def _pack(obj: Any) -> bytes:
    try:
        return msgpack.packb(obj, use_bin_type=True, strict_types=True, unicode_errors="surrogatepass")
    except (TypeError, OverflowError, ValueError) as e:
        raise IRError("cannot encode program record: %s" % e) from e


def _unpack(data: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False, unicode_errors="surrogatepass")
    except Exception as e:
        raise IRDecodeError("IR payload %s is corrupt: %s" % (what, e)) from e
