"""The envelope every binary payload shares (programs, requests, results).

Layout::

    4-byte magic                 what the payload is (b"NNIR", b"NNRQ", ...)
    uint32 big-endian            length H of the header ("framed" payloads only)
    H bytes                      msgpack map: the header, readable without decompressing
    rest                         zstd frame (checksummed) of a msgpack body

msgpack picks the smallest encoding of every value and zstd runs
single-threaded at a fixed level, so the same input gives the same bytes.

Reading is bounded (:class:`~.limits.DecodeLimits`): the header's length is
checked before it is unpacked, the body is decompressed as a stream that stops
at ``max_decompressed_bytes`` (a frame's declared content size is checked first;
frames need not declare one), and msgpack refuses strings, bytes, arrays and
maps over their limits before building them.
"""
from __future__ import annotations

import struct
import threading
from typing import Any, Dict, Optional, Tuple

import msgpack
import zstandard

from .errors import IRDecodeError, IRError, IRLimitError
from .limits import DecodeLimits, limits_or_default

ZSTD_LEVEL = 9
_LEN = struct.Struct(">I")
_CHUNK = 1 << 20  # streaming decompression step
# msgpack's refusal -> the DecodeLimits field behind it (ext types are simply not part of the format)
_MSGPACK_LIMITS = (("max_str_len", "max_str_bytes"), ("max_bin_len", "max_bytes_len"),
                   ("max_array_len", "max_items"), ("max_map_len", "max_items"))


def pack(obj: Any) -> bytes:
    try:
        return msgpack.packb(obj, use_bin_type=True, strict_types=True, unicode_errors="surrogatepass")
    except (TypeError, OverflowError, ValueError) as e:
        raise IRError("cannot encode program record: %s" % e) from e


def unpack(data: Any, what: str, limits: Optional[DecodeLimits] = None) -> Any:
    """msgpack-decode ``data``; every string, bytes, array and map is size-checked before it is built."""
    lim = limits_or_default(limits)
    items = min(lim.max_items, len(data))  # an entry takes at least one byte
    try:
        return msgpack.unpackb(
            data, raw=False, use_list=True, strict_map_key=False, unicode_errors="surrogatepass",
            max_str_len=min(lim.max_str_bytes, len(data)), max_bin_len=min(lim.max_bytes_len, len(data)),
            max_array_len=items, max_map_len=items, max_ext_len=0)
    except ValueError as e:
        field = next((f for key, f in _MSGPACK_LIMITS if key in str(e)), None)
        if field is not None:
            raise IRLimitError("%s: %s, over the decoding limit %s=%d; if this payload is legitimate, pass "
                               "limits=DecodeLimits(%s=...) with a larger value" % (
                                   what, e, field, getattr(lim, field), field), field) from None
        raise IRDecodeError("%s is corrupt: %s" % (what, e)) from e
    except RecursionError:
        raise lim.exceeded("max_depth", "%s nesting" % what, "too deep") from None
    except Exception as e:
        raise IRDecodeError("%s is corrupt: %s" % (what, e)) from e


def compress(raw: bytes, level: int = ZSTD_LEVEL) -> bytes:
    compressors = getattr(_Compressors.local, "by_level", None)
    if compressors is None:
        compressors = _Compressors.local.by_level = {}
    compressor = compressors.get(level)
    if compressor is None:
        compressor = compressors[level] = zstandard.ZstdCompressor(level=level, write_checksum=True)
    return compressor.compress(raw)


class _Compressors:
    """One zstd compressor per thread and level: making one costs ~20 us, more than compressing a
    small result (a compressor is not thread-safe; a thread uses a handful of levels)."""

    local = threading.local()


def wrap(magic: bytes, header: Any, body: bytes) -> bytes:
    """``magic + len(header) + header + body`` with the header packed uncompressed."""
    packed = pack(header)
    return magic + _LEN.pack(len(packed)) + packed + body


def check_magic(data: Any, magic: bytes, what: str) -> None:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise IRDecodeError("expected bytes, got %s" % type(data).__name__)
    if bytes(data[: len(magic)]) != magic:
        raise IRDecodeError("not an nnsight %s (bad magic %r, expected %r)" % (what, bytes(data[:4]), magic))


def read_header(data: Any, magic: bytes, what: str,
                limits: Optional[DecodeLimits] = None) -> Tuple[Dict[str, Any], int]:
    """The header map of a framed payload and the offset of its body."""
    lim = limits_or_default(limits)
    check_magic(data, magic, what)
    start = len(magic) + _LEN.size
    if len(data) < start:
        raise IRDecodeError("%s truncated in its header" % what)
    (size,) = _LEN.unpack_from(data, len(magic))
    if size > lim.max_header_bytes:
        raise lim.exceeded("max_header_bytes", "%s header length" % what, size)
    if len(data) < start + size:
        raise IRDecodeError("%s truncated in its header" % what)
    header = unpack(bytes(data[start: start + size]), what + " header", lim)
    if not isinstance(header, dict):
        raise IRDecodeError("%s header is not a map" % what)
    return header, start + size


def read_body(data: Any, offset: int, what: str, limits: Optional[DecodeLimits] = None) -> Any:
    """Decompress (bounded) and unpack the body that starts at ``offset``."""
    lim = limits_or_default(limits)
    return unpack(decompress(memoryview(data)[offset:], what + " body", lim), what + " body", lim)


def decompress(frame: Any, what: str, limits: Optional[DecodeLimits] = None) -> Any:
    """One zstd frame, never inflated past ``max_decompressed_bytes``.

    A frame that declares its content size is checked against the limit and
    decompressed in one go (the output buffer is that size); one that does not
    is streamed in chunks until it ends or passes the limit.
    """
    lim = limits_or_default(limits)
    cap = lim.max_decompressed_bytes
    try:
        declared = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as e:
        raise IRDecodeError("%s is corrupt: %s" % (what, e)) from e
    if declared > cap:
        raise lim.exceeded("max_decompressed_bytes", "%s: declared decompressed size" % what, declared)
    dctx = zstandard.ZstdDecompressor()
    try:
        if declared >= 0:
            return dctx.decompress(frame, max_output_size=cap)
        out = bytearray()
        with dctx.stream_reader(frame, read_across_frames=False) as reader:
            while True:
                chunk = reader.read(min(_CHUNK, cap + 1 - len(out)))
                if not chunk:
                    return out
                out += chunk
                if len(out) > cap:
                    raise lim.exceeded("max_decompressed_bytes", "%s: decompressed size" % what, "over %d" % cap)
    except zstandard.ZstdError as e:
        raise IRDecodeError("%s is corrupt: %s" % (what, e)) from e
