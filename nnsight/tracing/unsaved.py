"""What a name set in a trace but never saved holds afterwards: an object that says to save it.

Values made inside a trace only leave it when saved (``.save()`` / ``nnsight.save()``). A name
the trace body assigned without saving used to be simply unbound after the trace, and the first
use failed with a bare ``NameError: name 'hidden' is not defined``. Such a name is now bound to a
:class:`Unsaved` placeholder instead (only if the caller had no variable of that name), and any
use of it raises :class:`NotSavedError`, a ``NameError`` that names the trace and says how to fix it.
"""
from typing import Any, Dict, Iterable


class NotSavedError(NameError):
    """A value set inside a trace was used after the trace, but it was not saved."""


def _fail(self, *args: Any, **kwargs: Any) -> Any:
    raise NotSavedError(object.__getattribute__(self, "_message"))


class Unsaved:
    """Placeholder for a name assigned in a trace without ``.save()``; every use raises."""

    __slots__ = ("_message",)

    def __init__(self, name: str, where: str) -> None:
        object.__setattr__(self, "_message", (
            f"`{name}` was set inside the trace at {where} but not saved, so it has no value after "
            f"the trace. Save it inside the trace: `{name} = ....save()` (or `nnsight.save({name})`)."))

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        placeholder = next(a for a in list(args) + list((kwargs or {}).values()) if isinstance(a, cls))
        _fail(placeholder)

    __getattr__ = __setattr__ = __delattr__ = __call__ = _fail
    __repr__ = __str__ = __format__ = __bool__ = __len__ = __iter__ = __contains__ = _fail
    __getitem__ = __setitem__ = __delitem__ = __index__ = __int__ = __float__ = _fail
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _fail
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __matmul__ = __rmatmul__ = _fail
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = _fail
    __pow__ = __rpow__ = __neg__ = __pos__ = __abs__ = __invert__ = _fail
    __and__ = __rand__ = __or__ = __ror__ = __xor__ = __rxor__ = _fail
    __hash__ = None  # type: ignore[assignment]


def placeholders(names: Iterable[str], saved: Dict[str, Any], bound, where: str) -> Dict[str, Unsaved]:
    """A placeholder for each of ``names`` that was not saved and is not a variable of the caller."""
    return {name: Unsaved(name, where) for name in names if name not in saved and name not in bound}
