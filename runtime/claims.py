"""Which IR unit a tracing context entered from compiled code runs as its body.

Code built by :mod:`runtime.builder` is registered here. When a tracing
context (``tracer.invoke``, ``loss.backward()``, a trace inside a session, ...)
is entered from such code, :func:`claim` finds the descendant unit whose
with-header holds the current line and marks it claimed for that frame; the
rewritten with-body then asks :func:`claimed` and skips its inline copy.
"""
import sys
from typing import Dict, Optional

# id(code object) -> (code object, CompiledUnit). Keyed by id: hashing a code object hashes
# all its bytecode and constants (tens of microseconds for a big module) and is not cached.
_codes: Dict[int, tuple] = {}
_claims: Dict[int, int] = {}  # id(frame) -> claimed unit id


def register(code, compiled_unit) -> None:
    _codes[id(code)] = (code, compiled_unit)


def unit_for_code(code):
    """The CompiledUnit built as ``code``, or None for code we did not build."""
    entry = _codes.get(id(code))
    return entry[1] if entry is not None and entry[0] is code else None


def compiled_unit_of(frame):
    """The CompiledUnit whose code ``frame`` executes, or None for user code."""
    return unit_for_code(frame.f_code)


def claim(frame) -> Optional[object]:
    """Claim the descendant unit owning the with-header at ``frame``'s current line.

    Returns ``(compiled_program, unit_id)`` or None when ``frame`` is not compiled code.
    """
    owner = unit_for_code(frame.f_code)
    if owner is None:
        return None
    uid = owner.headers.get(frame.f_lineno)
    if uid is None:
        raise RuntimeError(
            f"nnsight: a tracing context was entered at line {frame.f_lineno} of compiled "
            f"code from {owner.unit.loc.file}, but no with-block starts there. Tracing "
            f"contexts must be used directly in a `with` statement.")
    _claims[id(frame)] = uid
    return owner.program, uid


def claimed(uid: int) -> bool:
    """True if a tracing context claimed unit ``uid`` in the calling frame (consumes the claim)."""
    return _claims.pop(id(sys._getframe(1)), None) == uid


def clear() -> None:
    _codes.clear()
    _claims.clear()
