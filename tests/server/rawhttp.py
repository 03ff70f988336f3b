"""Reading one HTTP/1.1 request off a raw socket, for the tests' hand-written loopback servers."""
from typing import List, Optional, Tuple


def read_request(conn, buffered: bytes = b"") -> Optional[Tuple[List[str], bytes, bytes]]:
    """``(head lines, body, bytes after it)`` of the next request (its body by content-length), or
    None when the peer closes (or the socket fails) before a whole head arrived."""
    while b"\r\n\r\n" not in buffered:
        try:
            chunk = conn.recv(65536)
        except OSError:
            return None
        if not chunk:
            return None
        buffered += chunk
    head, _, buffered = buffered.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next((int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length")), 0)
    while len(buffered) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        buffered += chunk
    return lines, buffered[:length], buffered[length:]
