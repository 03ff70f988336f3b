"""Local blocks (``with tracer.local():``): the server's side and the wire format of both sides.

When a remote program reaches a unit with the ``local`` fact, the job's
mediator stops there. The server sends a LOCAL message -- the values of the
unit's ``reads`` -- and waits for the client's LOCAL_RESULT: the names the
block assigned, the read tensors it edited in place, the names it saved (or the
error it raised). Both messages are result-framed value trees
(:func:`compiler.ir.request.encode_result`), so they have the codec's limits.

The client's bytes are hostile: the reply is decoded data-only through the
request's own resolver (:meth:`runtime.loader.Loader.decode`), must answer the
block the server asked for, and may only set names the block assigns or reads.

``LOCAL_RESULT`` on the wire (the WebSocket's binary message): ``b"NNLR"``,
the block number as 4 big-endian bytes, then the result-framed tree.
"""
import struct
from typing import Any, Callable, Dict, List, Optional, Tuple

from compiler.ir import FACT_LOCAL, CodeUnit
from compiler.ir.errors import IRError
from compiler.ir.limits import DecodeLimits
from compiler.ir.request import decode_result, encode_result
from compiler.ir.values import encode_value

from . import saves

REPLY_MAGIC = b"NNLR"
# The program namespace's name for the job's LocalBlocks (absent: local blocks run inline).
LOCAL_BLOCKS = "__nnsight_local_blocks__"
# (block number, LOCAL bytes) -> LOCAL_RESULT bytes (without the NNLR header)
Transport = Callable[[int, bytes], bytes]


class LocalBlockError(Exception):
    """The client's local block raised, or its reply was refused: the job stops here."""


class LocalBlockTimeout(LocalBlockError):
    """No reply from the client in time (it disconnected, or is not following the job's events)."""


def frame_reply(block: int, body: bytes) -> bytes:
    """A LOCAL_RESULT as sent on the WebSocket."""
    return REPLY_MAGIC + struct.pack(">I", block) + body


def unframe_reply(message: bytes) -> Tuple[int, bytes]:
    """``(block, body)`` of a LOCAL_RESULT WebSocket message; ValueError when it is not one."""
    if len(message) < 8 or message[:4] != REPLY_MAGIC:
        raise ValueError("not a LOCAL_RESULT message (it must start with %r)" % REPLY_MAGIC)
    return struct.unpack(">I", message[4:8])[0], message[8:]


def encode_local(block: int, unit: int, values: Dict[str, Any], **encode: Any) -> bytes:
    """The LOCAL message: the values the block reads, by name."""
    tree = encode_value({"block": block, "unit": unit, "values": values},
                        where="the values sent to the local block", records=True, **encode)
    return encode_result(tree)


def encode_reply(block: int, values: Dict[str, Any], saved: List[str],
                 error: Optional[BaseException] = None) -> bytes:
    """The LOCAL_RESULT body: what the block set, what it saved, or the error it raised."""
    if error is not None:
        payload: Dict[str, Any] = {"block": block, "values": {}, "saved": [],
                                   "error": {"type": type(error).__name__, "message": str(error)[:2000]}}
    else:
        payload = {"block": block, "values": values, "saved": list(saved), "error": None}
    return encode_result(encode_value(payload, where="the local block's results", records=True))


def _checked_reply(reply: Any, block: int, unit: CodeUnit) -> Tuple[Dict[str, Any], List[str]]:
    """The reply's ``(values, saved)`` once it is shown to answer ``block`` within ``unit``'s names."""
    if not isinstance(reply, dict) or reply.get("block") != block:
        raise LocalBlockError("the client's reply does not answer local block %d" % block)
    error = reply.get("error")
    if error is not None:
        kind = error.get("type") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        raise LocalBlockError("the local block raised on the client: %s: %s" % (
            kind if isinstance(kind, str) else "Exception", message if isinstance(message, str) else ""))
    values, saved = reply.get("values"), reply.get("saved")
    allowed = set(unit.assigned) | set(unit.reads)
    if not isinstance(values, dict) or not all(isinstance(k, str) and k in allowed for k in values):
        raise LocalBlockError("the client's reply sets names local block %d does not assign or read" % block)
    if not isinstance(saved, list) or not all(isinstance(n, str) and n in values for n in saved):
        raise LocalBlockError("the client's reply saves names it does not send")
    return values, saved


def _write_in_place(old: Any, new: Any) -> bool:
    """Copy an edited tensor back into the server's own (a view of an activation stays one).

    A torch-free client edits the tensor as it saw it -- a numpy array, or nested lists of
    numbers -- so those are copied in too when their shape matches.
    """
    try:
        import torch
    except ImportError:  # pragma: no cover - the runtime has torch
        return False
    if not isinstance(old, torch.Tensor):
        return False
    if not isinstance(new, torch.Tensor):
        if not (type(new) is list or (type(new).__module__ == "numpy" and type(new).__name__ == "ndarray")):
            return False
        try:
            new = torch.as_tensor(new, dtype=old.dtype)
        except (TypeError, ValueError, RuntimeError):
            return False
    if old.shape != new.shape:
        return False
    new = new.to(device=old.device, dtype=old.dtype)
    if not torch.equal(old, new):
        old.copy_(new)
    return True


class LocalBlocks:
    """One job's local blocks, on the server: send the reads, wait, apply the reply.

    ``decode`` is the request's data-only decoder; ``encode`` the keyword arguments of
    :func:`compiler.ir.values.encode_value` for the request (its class and object references).
    """

    def __init__(self, transport: Transport, decode: Callable[[Any], Any], *,
                 limits: Optional[DecodeLimits] = None, **encode: Any) -> None:
        self.transport = transport
        self.decode = decode
        self.limits = limits
        self.encode = encode
        self.blocks = 0

    def run(self, unit: CodeUnit, ns: Dict[str, Any]) -> None:
        """Run local block ``unit`` on the client; its changes land in ``ns`` (the program's names)."""
        if FACT_LOCAL not in unit.facts:
            raise LocalBlockError("unit %d is not a local block" % unit.id)
        self.blocks += 1
        block = self.blocks
        values = {name: ns[name] for name in unit.reads if name in ns}
        body = self.transport(block, encode_local(block, unit.id, values, **self.encode))
        try:
            reply = self.decode(decode_result(body, limits=self.limits))
        except IRError as error:
            raise LocalBlockError("the client's reply to local block %d is malformed: %s" % (block, error)) from None
        changed, saved = _checked_reply(reply, block, unit)
        for name, value in changed.items():
            if name in unit.assigned or not _write_in_place(ns.get(name), value):
                ns[name] = value
        for name in saved:
            saves.save(ns[name])
