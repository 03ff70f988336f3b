"""The typed errors of loading and running a request on the server."""
from typing import Optional


class LoadError(Exception):
    """The program cannot be loaded on this server (malformed, or refused by policy)."""


class ServerRefusal(PermissionError):
    """User code did something the server refuses: a dangerous builtin, an interpreter internal,
    a private attribute of a server object, a write to the server's modules.

    ``code`` is the checker's diagnostic code (``nnsight-compile check`` reports the same one).
    """

    def __init__(self, message: str, code: Optional[str] = None):
        super().__init__(message)
        self.code = code


class ServerImportError(ModuleNotFoundError):
    """User code imported or reached a module (or a module's entry point) the server does not provide."""

    code = "NN401"


def refused_entry(name: str, reason: str, where: str = "") -> ServerImportError:
    """The one diagnostic for a refused module and a refused entry of an allowed module."""
    from compiler import policy

    what = "module %r" % name if policy.classify_module(name) == policy.DANGEROUS else repr(name)
    return ServerImportError("%s%s is not available on the server: %s" % (where, what, reason), name=name)
