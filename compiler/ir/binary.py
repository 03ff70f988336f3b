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

from typing import Any, Dict, Optional, Tuple

from . import framing
from .errors import IRDecodeError, IRError
from .framing import ZSTD_LEVEL  # noqa: F401  (re-exported)
from .limits import DecodeLimits, limits_or_default
from .nodes import Header, Program
from .upgraders import check_version, from_record, to_record, upgrade
from .values import plain_problem

MAGIC = b"NNIR"
_WHAT = "IR payload"


def check_plain(p: Program) -> None:
    """Every binding value must be a plain value tree (what both encodings can carry)."""
    for b in p.bindings + tuple(g for d in p.definitions for g in d.globals + d.cells + d.attrs):
        problem = plain_problem(b.value, "value")
        if problem:
            raise IRError("cannot encode binding %r: %s" % (b.name, problem))


def encode(p: Program) -> bytes:
    """The binary form of ``p`` (same program -> same bytes)."""
    check_plain(p)
    record = to_record(p)
    header = record.pop("header")
    return framing.wrap(MAGIC, header, framing.compress(framing.pack(record)))


def decode(data: bytes, *, limits: Optional[DecodeLimits] = None) -> Program:
    """Parse a binary program; raise IRVersionError for newer versions, IRDecodeError (IRLimitError
    when over a :class:`~.limits.DecodeLimits` bound) if malformed."""
    lim = limits_or_default(limits)
    header, offset = _read_header(data, lim)
    check_version(header.get("ir_version"))
    record = framing.read_body(data, offset, _WHAT, lim)
    if not isinstance(record, dict):
        raise IRDecodeError("IR payload body is not a map")
    return from_record(upgrade(dict(record, header=header)))


def read_header(data: bytes) -> Header:
    """The header of a binary program, without decompressing its body (version-checked)."""
    header, _ = _read_header(data)
    check_version(header.get("ir_version"))
    return from_record({"header": header, "units": [], "bindings": [], "definitions": [],
                        "envoys": [], "dynamic": True,
                        "dynamic_names": []}).header


def _read_header(data: bytes, limits: Optional[DecodeLimits] = None) -> Tuple[Dict[str, Any], int]:
    return framing.read_header(data, MAGIC, _WHAT, limits)
