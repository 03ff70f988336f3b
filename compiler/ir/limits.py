"""Decoding limits: every payload is measured before anything is allocated for it.

A request, a program or a result comes from another machine; its bytes say
how big things are (a zstd frame's content size, a tensor's shape, a string's
length). :class:`DecodeLimits` bounds each of these, and every decoder checks
the bound *before* it allocates, so a 100 kB frame cannot inflate to 3 GB and a
40-byte array header cannot claim 300M elements. Exceeding one raises
:class:`~compiler.ir.errors.IRLimitError` naming the field to raise.

The defaults are generous for legitimate use (a request carrying a model's
worth of steering vectors, a result with saved hidden states) and still keep a
hostile payload far from exhausting a server. Pass your own to any decoder::

    decode_request(data, limits=DecodeLimits(max_decompressed_bytes=8 << 30))
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import IRLimitError

GiB = 1 << 30
MiB = 1 << 20


@dataclass(frozen=True)
class DecodeLimits:
    """Upper bounds a decoder enforces before allocating (all sizes in bytes).

    max_decompressed_bytes: the unpacked size of one zstd body (request, program, result).
    max_header_bytes: the uncompressed header of a framed payload.
    max_tensor_bytes: one tensor's or array's data, from dtype x shape.
    max_dims: the number of dimensions of one tensor or array.
    max_depth: nesting of value trees, records and text literals.
    max_items: one list's or map's entry count, and the total nodes of one value tree.
    max_str_bytes: one string (also the text form of a program, in characters).
    max_bytes_len: one bytes value (tensor data included).
    """

    max_decompressed_bytes: int = 2 * GiB
    max_header_bytes: int = 1 * MiB
    max_tensor_bytes: int = 2 * GiB
    max_dims: int = 64
    max_depth: int = 200
    max_items: int = 50_000_000
    max_str_bytes: int = 256 * MiB
    max_bytes_len: int = 2 * GiB

    def exceeded(self, field: str, what: str, got: object) -> IRLimitError:
        """The error for ``what`` (measured as ``got``) being over ``field``."""
        return IRLimitError("%s (%s) exceeds the decoding limit %s=%s; if this payload is legitimate, "
                            "pass limits=DecodeLimits(%s=...) with a larger value" % (
                                what, got, field, getattr(self, field), field), field)


DEFAULT_LIMITS = DecodeLimits()


def limits_or_default(limits: "DecodeLimits | None") -> DecodeLimits:
    return DEFAULT_LIMITS if limits is None else limits
