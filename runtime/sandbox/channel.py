"""The byte channel between the model process and a sandbox child: length-prefixed msgpack frames.

One frame is ``uint32 big-endian length`` + a msgpack list ``[kind, ...]``. Both
sides read with a bound on the frame length checked *before* the body is
received, and decode it with :func:`compiler.ir.framing.unpack` under
:class:`compiler.ir.limits.DecodeLimits` (no pickle, no ext types). The model
process treats every frame from the child as written by an attacker.
"""
import socket
import struct
from typing import Any, List, Optional

from compiler.ir import framing
from compiler.ir.errors import IRDecodeError
from compiler.ir.limits import DecodeLimits

_LEN = struct.Struct(">I")
MAX_FRAME_BYTES = 1 << 30  # one frame (tensors travel inline); over it the peer is cut off

# Frame kinds. Child -> model: READY (confined, first), CALL, LOG, LOCAL, DONE (the result bytes),
# DONE_HOSTED (the result's value tree, with handles the model process fills in: results.py), FAILED;
# model -> child: JOB, HOOK; both ways: RETURN, RAISE (the answer to the last CALL / HOOK / LOCAL the
# peer sent).
READY, JOB, CALL, HOOK, RETURN, RAISE, LOG, LOCAL, DONE, DONE_HOSTED, FAILED = (
    "ready", "job", "call", "hook", "return", "raise", "log", "local", "done", "done-hosted", "failed")


class ChannelClosed(Exception):
    """The peer closed the channel (or was killed)."""


class ChannelError(Exception):
    """The peer sent a frame that breaks the protocol (too big, corrupt, unexpected)."""


class Channel:
    """A connected stream socket carrying frames; one reader and one writer (the job's thread)."""

    def __init__(self, sock: socket.socket, limits: Optional[DecodeLimits] = None,
                 max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.sock = sock
        self.limits = limits or DecodeLimits(max_decompressed_bytes=max_frame_bytes,
                                             max_bytes_len=max_frame_bytes, max_tensor_bytes=max_frame_bytes)
        self.max_frame_bytes = max_frame_bytes

    def send(self, *frame: Any) -> None:
        body = framing.pack(list(frame))
        if len(body) > self.max_frame_bytes:
            raise ChannelError("a %s frame of %d bytes is over the channel's limit of %d bytes"
                               % (frame[0], len(body), self.max_frame_bytes))
        try:
            self.sock.sendall(_LEN.pack(len(body)) + body if len(body) < 65536 else _LEN.pack(len(body)))
            if len(body) >= 65536:
                self.sock.sendall(body)
        except OSError as error:
            raise ChannelClosed("the sandbox channel is closed (%s)" % error) from None

    def recv(self) -> List[Any]:
        n = _LEN.unpack(self._exactly(_LEN.size))[0]
        if n > self.max_frame_bytes:
            raise ChannelError("the peer announced a frame of %d bytes, over the limit of %d" % (n, self.max_frame_bytes))
        body = self._exactly(n)
        try:
            frame = framing.unpack(body, "sandbox frame", self.limits)
        except IRDecodeError as error:
            raise ChannelError(str(error)) from None
        if type(frame) is not list or not frame or type(frame[0]) is not str:
            raise ChannelError("a sandbox frame must be a list starting with its kind")
        return frame

    def _exactly(self, n: int) -> bytes:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            try:
                k = self.sock.recv_into(view[got:], n - got)
            except OSError as error:
                raise ChannelClosed("the sandbox channel is closed (%s)" % error) from None
            if k == 0:
                raise ChannelClosed("the sandbox process closed its channel (it ended or was killed)")
            got += k
        return bytes(buf)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
