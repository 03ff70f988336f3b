"""The model process's side of a sandbox job, served in a thread against a socket pair: the tests
play the child on the other end (tests/sandbox/test_boundary.py, test_hosted_handles.py)."""
import socket
import threading
from typing import Any, Callable, Dict, Tuple

from compiler.ir.limits import DecodeLimits
from runtime.loader.hosted_memory import hosted_storages
from runtime.sandbox.channel import Channel
from runtime.sandbox.host import HostSession


def serve_in_thread(module: Any, log: Callable[[str], None]) -> Tuple[Channel, HostSession, threading.Thread,
                                                                       Dict[str, Any], Callable[[], None]]:
    """``(child channel, host session, serving thread, outcome, close)``: ``outcome`` gets the
    session's ``result`` or ``error`` once it ends; ``close()`` closes both ends."""
    ours, theirs = socket.socketpair()
    host = HostSession(Channel(ours), module, dict(module.named_modules()), set(hosted_storages(module)),
                       log, None, DecodeLimits())
    outcome: Dict[str, Any] = {}

    def serve() -> None:
        try:
            outcome["result"] = host.serve()
        except BaseException as error:  # noqa: B902 - the outcome the test inspects
            outcome["error"] = error

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def close() -> None:
        ours.close()
        theirs.close()

    return Channel(theirs), host, thread, outcome, close
