"""NDIF service queries: ``nnsight.ndif_status()`` (also spelled ``nnsight.status()``, as in
nnsight 0.8) and ``nnsight.is_model_running(repo_id)``.

This version has no client for a remote service yet (``remote=True`` is not available either), so
these functions raise :class:`RemoteUnavailableError` instead of answering: a made-up status would
be worse than none. ``remote='local'`` runs a trace exactly as a server would, locally.
"""
from typing import Any


class RemoteUnavailableError(NotImplementedError):
    """A remote-service feature was used, and this version of nnsight has no remote client yet."""


def _unavailable(what: str) -> RemoteUnavailableError:
    from .config import CONFIG

    return RemoteUnavailableError(
        f"{what} asks the NDIF service ({CONFIG.API.HOST}) which models it hosts, and this version "
        f"of nnsight has no client for the remote service yet (remote=True is not available either). "
        f"See https://nnsight.net/status/ for the service's models; to check that a trace will run "
        f"remotely, run it with remote='local'.")


def ndif_status(raw: bool = False) -> Any:
    """The models the NDIF service hosts and their state (raises: no remote client yet)."""
    raise _unavailable("nnsight.ndif_status()")


def status(raw: bool = False) -> Any:
    """nnsight 0.8's name for :func:`ndif_status` (raises: no remote client yet)."""
    raise _unavailable("nnsight.status()")


def is_model_running(repo_id: str) -> bool:
    """Whether the NDIF service is serving ``repo_id`` now (raises: no remote client yet)."""
    raise _unavailable(f"nnsight.is_model_running({repo_id!r})")
