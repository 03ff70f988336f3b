"""The IR version each server accepts, so a client upgraded before its server keeps working.

A server refuses a request in a newer IR version than its own (``400``, code ``ir_version``,
``accepted: [oldest, newest]``). The client then writes the same program in the server's newest
version when the program can be said in it (:mod:`compiler.ir.downgraders`), sends it again once,
and remembers the version for that server, so later requests go out in it at once. The refusal's
fields come from the network: only a version this client can write is believed.
"""
from typing import Callable, Optional

from compiler.lru import BoundedLRU

from .errors import RemoteError

Encode = Callable[[Optional[int]], bytes]  # the request's bytes in an IR version (None: the newest)

_ACCEPTED: "BoundedLRU[int]" = BoundedLRU(32)  # server url -> the newest IR version it accepts


def known(url: str) -> Optional[int]:
    """The IR version to write for the server at ``url`` (None: this client's own)."""
    return _ACCEPTED.get(url)


def remember(url: str, version: int) -> None:
    _ACCEPTED.put(url, version)


def forget(url: str) -> None:
    """The server was upgraded (it accepted a newer version): write the newest again."""
    _ACCEPTED.pop(url)


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
