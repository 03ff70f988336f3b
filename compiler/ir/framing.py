"""The envelope every binary payload shares (programs, requests, results).

Layout::

    4-byte magic                 what the payload is (b"NNIR", b"NNRQ", ...)
    uint32 big-endian            length H of the header ("framed" payloads only)
    H bytes                      msgpack map: the header, readable without decompressing
    rest                         zstd frame (checksummed) of a msgpack body

msgpack picks the smallest encoding of every value and zstd runs
single-threaded at a fixed level, so the same input gives the same bytes.
"""
from __future__ import annotations

import struct
from typing import Any, Dict, Tuple

import msgpack
import zstandard

from .errors import IRDecodeError, IRError

ZSTD_LEVEL = 9
_LEN = struct.Struct(">I")


def pack(obj: Any) -> bytes:
    try:
        return msgpack.packb(obj, use_bin_type=True, strict_types=True, unicode_errors="surrogatepass")
    except (TypeError, OverflowError, ValueError) as e:
        raise IRError("cannot encode program record: %s" % e) from e


def unpack(data: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False, unicode_errors="surrogatepass")
    except Exception as e:
        raise IRDecodeError("%s is corrupt: %s" % (what, e)) from e


def compress(raw: bytes, level: int = ZSTD_LEVEL) -> bytes:
    return zstandard.ZstdCompressor(level=level, write_checksum=True).compress(raw)


def wrap(magic: bytes, header: Any, body: bytes) -> bytes:
    """``magic + len(header) + header + body`` with the header packed uncompressed."""
    packed = pack(header)
    return magic + _LEN.pack(len(packed)) + packed + body


def check_magic(data: Any, magic: bytes, what: str) -> None:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise IRDecodeError("expected bytes, got %s" % type(data).__name__)
    if bytes(data[: len(magic)]) != magic:
        raise IRDecodeError("not an nnsight %s (bad magic %r, expected %r)" % (what, bytes(data[:4]), magic))


def read_header(data: Any, magic: bytes, what: str) -> Tuple[Dict[str, Any], int]:
    """The header map of a framed payload and the offset of its body."""
    check_magic(data, magic, what)
    start = len(magic) + _LEN.size
    if len(data) < start:
        raise IRDecodeError("%s truncated in its header" % what)
    (size,) = _LEN.unpack_from(data, len(magic))
    if len(data) < start + size:
        raise IRDecodeError("%s truncated in its header" % what)
    header = unpack(bytes(data[start: start + size]), what + " header")
    if not isinstance(header, dict):
        raise IRDecodeError("%s header is not a map" % what)
    return header, start + size


def read_body(data: Any, offset: int, what: str) -> Any:
    """Decompress and unpack the body that starts at ``offset``."""
    try:
        raw = zstandard.ZstdDecompressor().decompress(bytes(data[offset:]))
    except zstandard.ZstdError as e:
        raise IRDecodeError("%s body is corrupt: %s" % (what, e)) from e
    return unpack(raw, what + " body")
