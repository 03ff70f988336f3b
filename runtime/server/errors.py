"""Errors the HTTP API answers with: a status code and a JSON body ``{code, message, hint}``."""
from typing import Any, Dict, Optional


class ApiError(Exception):
    """A refusal of a request, with what went wrong (``message``) and how to fix it (``hint``)."""

    def __init__(self, status: int, code: str, message: str, hint: str = "",
                 headers: Optional[Dict[str, str]] = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.hint = hint
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> Dict[str, Any]:
        data = {"code": self.code, "message": self.message, "hint": self.hint}
        data.update(self.extra)
        return data
