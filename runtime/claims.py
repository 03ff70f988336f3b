"""Which IR unit a tracing context entered from compiled code runs as its body.

Code built by :mod:`runtime.builder` is registered here. When a tracing
context (``tracer.invoke``, ``loss.backward()``, a trace inside a session, ...)
is entered from such code, :func:`claim` finds the descendant unit whose
with-header holds the current line and marks it claimed for that frame; the
rewritten with-body then asks :func:`claimed` and skips its inline copy.
"""
import sys
import weakref
from typing import Dict, Optional

from . import registries

# id(code object) -> weak reference to the CompiledUnit built as that code. Keyed by id: hashing
# a code object hashes all its bytecode and constants (tens of microseconds for a big module) and
# is not cached. Weak: an entry goes when its unit's program is dropped (a request that finished,
# a call site evicted from the compile cache), so the registry never outgrows the live programs.
_codes: Dict[int, "weakref.ref"] = {}
# id(frame) -> claimed unit id. A claim is consumed by the with-body right after it is made, so
# this holds at most the nesting depth; claims left by an exception are dropped at CLAIMS_BOUND.
_claims: Dict[int, int] = {}
CLAIMS_BOUND = 1024


def register(code, compiled_unit) -> None:
    key = id(code)

    def forget(ref, key=key):
        if _codes.get(key) is ref:
            del _codes[key]

    _codes[key] = weakref.ref(compiled_unit, forget)


def unit_for_code(code):
    """The CompiledUnit built as ``code``, or None for code we did not build."""
    ref = _codes.get(id(code))
    if ref is None:
        return None
    unit = ref()
    return unit if unit is not None and unit.code is code else None


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
    if len(_claims) >= CLAIMS_BOUND:
        _claims.clear()  # only stale claims can be this many (see CLAIMS_BOUND)
    _claims[id(frame)] = uid
    return owner.program, uid


def claimed(uid: int) -> bool:
    """True if a tracing context claimed unit ``uid`` in the calling frame (consumes the claim)."""
    return _claims.pop(id(sys._getframe(1)), None) == uid


def clear() -> None:
    _codes.clear()
    _claims.clear()


registries.track("runtime.claims.codes", lambda: len(_codes), None)
registries.track("runtime.claims.claims", lambda: len(_claims), CLAIMS_BOUND)
