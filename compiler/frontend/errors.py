"""Errors raised by the frontend (source capture, with-block location, lowering)."""


class FrontendError(Exception):
    """Base class of every frontend error."""


class SourceNotFoundError(FrontendError):
    """The source text of the calling frame could not be recovered."""


class WithBlockNotFoundError(FrontendError):
    """No ``with`` statement whose header covers the given line."""


class UnsupportedSyntaxError(FrontendError):
    """The with-statement was found but cannot be compiled (e.g. ``async with``)."""
