"""Reading from and writing to the user's frame around a trace."""
import ctypes
import sys

_CO_OPTIMIZED = 0x0001
_PEP667 = sys.version_info >= (3, 13)  # f_locals is a write-through proxy


if not _PEP667:
    _locals_to_fast = ctypes.pythonapi.PyFrame_LocalsToFast
    _locals_to_fast.argtypes = (ctypes.py_object, ctypes.c_int)
    _locals_to_fast.restype = None


def locals_to_fast(frame) -> None:
    """Copy ``frame.f_locals`` back into a function frame's variables (before 3.13)."""
    if not _PEP667:
        _locals_to_fast(frame, 0)


def write_back(frame, values: dict) -> None:
    """Make ``values`` visible as variables in ``frame`` (module or function scope)."""
    if not values:
        return
    f_locals = frame.f_locals
    f_locals.update(values)
    if not _PEP667 and frame.f_code.co_flags & _CO_OPTIMIZED:
        _locals_to_fast(frame, 0)


def release_locals(frame) -> None:
    """Drop the ``f_locals`` snapshot a trace made of a function frame (before 3.13).

    Reading ``frame.f_locals`` (and running a trace function on the frame) stores
    a dict copy of its variables on the frame. The copy is not updated by ``del``,
    so it would keep the model and every traced value alive as long as the
    function runs. It is emptied unless something else holds it (``locals()``).
    """
    if not _PEP667 and frame is not None and frame.f_code.co_flags & _CO_OPTIMIZED:
        snapshot = frame.f_locals
        if sys.getrefcount(snapshot) <= 3:  # the frame, `snapshot`, getrefcount's argument
            snapshot.clear()
