"""The framing of a job streamed over one HTTP response (``POST /v1/requests?stream=1``).

A blocking job is one HTTP round trip on the kept-alive connection pool: the
response body is a sequence of records, each ``kind`` (1 byte), ``length``
(4 bytes, big-endian), then ``length`` bytes. ``J`` is a status frame (a JSON
object, as on the WebSocket); ``B`` is a binary part, allowed only right after
a ``COMPLETED`` frame that says ``"inline": true``, of exactly its ``size``:
the result bytes. The acknowledgement (the job's id and queue position) is
the first frame, or the response's headers when the client asks for that
(:data:`ACK_REQUEST`). The server writes, the client reads; both sides live here so
the format is stated once. Torch-free (the client runs on CPython 3.9+).

The body is written by whoever answers the client: every length is checked
against its limit before a byte is buffered, and a frame that breaks the rules
is refused (:class:`StreamRefused`), never guessed at. A body that ends early
(:class:`StreamLost`) is a lost connection, not a refusal: the job is stored on
the server, so the client follows it by id instead.
"""
import json
import struct
from typing import Any, Dict, Iterable, Iterator, Optional

MEDIA_TYPE = "application/vnd.nnsight.frames"
FRAME, PART = b"J", b"B"
HEADER = struct.Struct(">cI")
MAX_FRAME_BYTES = 8 << 20  # one JSON status frame (a LOG line is cut to MAX_LOG_CHARS first)
MAX_LOG_CHARS = 1 << 20  # a printed line longer than this is cut in the frame (the store keeps it whole)
MAX_INLINE_BYTES = (1 << 20) - 1  # larger results are fetched with GET .../result (with a download bar)
TERMINAL = ("COMPLETED", "ERROR", "CANCELLED")
# The acknowledgement in the response's headers instead of a first frame, when the client sends
# ``ACK_REQUEST: headers`` (a server that does not know it sends the first frame, as before).
ACK_REQUEST = "nnsight-ack"
ACK_ID, ACK_POSITION = "nnsight-job-id", "nnsight-job-position"
KEEPALIVE = "KEEPALIVE"  # sent after KEEPALIVE_S without a frame, so a silent dead peer is noticed
KEEPALIVE_S = 15.0


class StreamRefused(ValueError):
    """The streamed body broke the framing rules (a hostile or broken server)."""


class StreamLost(ConnectionError):
    """The streamed body ended before the job's last frame."""


def pack_frame(frame: Dict[str, Any]) -> bytes:
    """One status frame as a ``J`` record."""
    if frame.get("status") == "LOG":
        line = frame.get("line")
        if isinstance(line, str) and len(line) > MAX_LOG_CHARS:
            frame = dict(frame, line=line[:MAX_LOG_CHARS] + " [... %d characters cut]" % (len(line) - MAX_LOG_CHARS))
    body = json.dumps(frame, separators=(",", ":")).encode("utf-8")
    return HEADER.pack(FRAME, len(body)) + body


def pack_part(data: bytes) -> bytes:
    """The result bytes as a ``B`` record (after a COMPLETED frame that says ``inline``)."""
    return HEADER.pack(PART, len(data)) + data


class _Reader:
    """Exact reads over an iterator of byte chunks."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = bytearray()

    def read(self, n: int, at_start: bool = False) -> Optional[bytes]:
        """``n`` bytes; None when the body ends cleanly before ``at_start`` record."""
        while len(self._buffer) < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                if at_start and not self._buffer:
                    return None
                raise StreamLost("the server's stream ended in the middle of a record")
            self._buffer += chunk
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data


def read_frames(chunks: Iterable[bytes], max_inline: int = MAX_INLINE_BYTES) -> Iterator[Dict[str, Any]]:
    """The status frames of a streamed body, until its terminal frame.

    An inline result comes as ``frame["result"]`` (bytes) of the COMPLETED frame. Raises
    :class:`StreamRefused` for a body that breaks the rules, :class:`StreamLost` for one that
    ends before a terminal frame.
    """
    reader = _Reader(chunks)
    while True:
        header = reader.read(HEADER.size, at_start=True)
        if header is None:
            raise StreamLost("the server's stream ended before the job's last status")
        kind, length = HEADER.unpack(header)
        if kind != FRAME:
            raise StreamRefused("expected a status frame, got a record of kind %r" % kind)
        if length > MAX_FRAME_BYTES:
            raise StreamRefused("a status frame of %d bytes is over the limit of %d" % (length, MAX_FRAME_BYTES))
        frame = _decode_frame(reader.read(length))
        status = frame["status"]
        if status == KEEPALIVE:
            continue
        if status == "COMPLETED" and frame.get("inline") is True:
            frame["result"] = _read_part(reader, frame.get("size"), max_inline)
        yield frame
        if status in TERMINAL:
            return


def header_acknowledgement(headers: Any) -> Optional[Dict[str, Any]]:
    """The acknowledgement carried by a streamed response's headers, or None if it has none.

    The values are the server's: a position that is not a plain number below 10**9 is refused
    (the id is checked by the caller, as a first frame's is)."""
    job_id = headers.get(ACK_ID)
    if job_id is None:
        return None
    position = headers.get(ACK_POSITION, "0")
    if not (isinstance(position, str) and position.isdigit() and len(position) <= 9):
        raise StreamRefused("the acknowledgement's queue position %r is not a number" % (position[:40],))
    return {"id": job_id, "status": "QUEUED", "position": int(position)}


def _decode_frame(body: bytes) -> Dict[str, Any]:
    try:
        frame = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise StreamRefused("a status frame is not JSON: %s" % error) from None
    if not isinstance(frame, dict) or not isinstance(frame.get("status"), str):
        raise StreamRefused("a status frame is not an object with a string 'status'")
    return frame


def _read_part(reader: _Reader, size: Any, max_inline: int) -> bytes:
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= max_inline:
        raise StreamRefused("an inline result of size %r is not allowed (at most %d bytes)" % (size, max_inline))
    kind, length = HEADER.unpack(reader.read(HEADER.size))
    if kind != PART or length != size:
        raise StreamRefused("the inline result's record (kind %r, %d bytes) does not match its frame (%d bytes)"
                            % (kind, length, size))
    return reader.read(length)
