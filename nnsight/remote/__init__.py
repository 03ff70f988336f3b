"""The client of an nnsight server: ``remote=True`` on traces, generations and sessions.

``client`` speaks the HTTP/WebSocket protocol (docs/protocol.md), ``backend``
follows one job and decodes its result, ``errors`` raises a job's error with
the user's file:line.
"""
from .backend import JobStatus  # noqa: F401
from .errors import RemoteError, RemoteJobError  # noqa: F401
