"""The IR version each server accepts, so a client upgraded before its server keeps working.

A server refuses a request in a newer IR version than its own (``400``, code ``ir_version``,
``accepted: [oldest, newest]``). The client then writes the same program in the server's newest
version when the program can be said in it (:mod:`compiler.ir.downgraders`), sends it again once,
and remembers the version for that server, so later requests go out in it at once. The refusal's
fields come from the network: only a version this client can write is believed.
"""
import threading
from collections import OrderedDict
from typing import Callable, Optional

from .errors import RemoteError

Encode = Callable[[Optional[int]], bytes]  # the request's bytes in an IR version (None: the newest)

_ACCEPTED: "OrderedDict[str, int]" = OrderedDict()  # server url -> the newest IR version it accepts
_BOUND = 32
_LOCK = threading.Lock()


def known(url: str) -> Optional[int]:
    """The IR version to write for the server at ``url`` (None: this client's own)."""
    with _LOCK:
        return _ACCEPTED.get(url)


def remember(url: str, version: int) -> None:
    with _LOCK:
        _ACCEPTED[url] = version
        _ACCEPTED.move_to_end(url)
        while len(_ACCEPTED) > _BOUND:
            _ACCEPTED.popitem(last=False)


def forget(url: str) -> None:
    """The server was upgraded (it accepted a newer version): write the newest again."""
    with _LOCK:
        _ACCEPTED.pop(url, None)


def older_version(error: RemoteError) -> Optional[int]:
    """The newest IR version the server accepts, from its ``ir_version`` refusal, if this client can
    write it and it is older than its own; else None."""
    from compiler.ir.downgraders import OLDEST_WRITTEN
    from compiler.ir.version import IR_VERSION

    if error.code != "ir_version":
        return None
    accepted = error.data.get("accepted")
    if not isinstance(accepted, list) or len(accepted) != 2 or any(type(v) is not int for v in accepted):
        return None
    oldest, newest = accepted
    return newest if OLDEST_WRITTEN <= newest < IR_VERSION and oldest <= newest else None


def encode_for(url: str, encode: Encode, version: Optional[int] = None) -> bytes:
    """The request's bytes for the server at ``url`` (in ``version``, else the one it is known to
    accept); a program that needs a newer version than the server's is a :class:`RemoteError`."""
    from compiler.ir.errors import IRVersionError

    remembered = version is None
    version = version if version is not None else known(url)
    try:
        return encode(version)
    except IRVersionError as error:
        if remembered and version is not None:  # the server may have been upgraded since: it decides
            forget(url)
            return encode(None)
        raise RemoteError("the server at %s is older than this client: %s" % (url, error), code="ir_version",
                          hint="upgrade nnsight on the server (`pip install -U nnsight`, then restart "
                               "`nnsight-server serve`)") from None
