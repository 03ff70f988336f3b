"""Reading from and writing to the user's frame around a trace."""
import ctypes
import sys

_CO_OPTIMIZED = 0x0001
_PEP667 = sys.version_info >= (3, 13)  # f_locals is a write-through proxy


def write_back(frame, values: dict) -> None:
    """Make ``values`` visible as variables in ``frame`` (module or function scope)."""
    if not values:
        return
    f_locals = frame.f_locals
    f_locals.update(values)
    if not _PEP667 and frame.f_code.co_flags & _CO_OPTIMIZED:
        ctypes.pythonapi.PyFrame_LocalsToFast(ctypes.py_object(frame), ctypes.c_int(0))
