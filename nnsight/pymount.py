"""``obj.save()`` on every Python object.

CPython keeps the attributes of ``object`` in a dict that Python code can't
normally change. We reach it through ``gc.get_referents`` on its mappingproxy,
add ``save``, and tell the type cache with ``PyType_Modified``. This is done
once, at import; objects that define their own ``save`` keep it.
"""
import ctypes
import gc

from runtime import saves


_depth = saves._depth
_mark = saves.SAVES.add


def _save(self, /):  # positional-only: torch._inductor's ops_handler code-generates plain `(self, ...)` methods
    """Keep this value after the trace (same as ``nnsight.save(obj)``)."""
    if not _depth[0]:
        return saves.save(self)  # raises the "outside of a trace" error
    _mark(id(self))
    return self


def _object_dict() -> dict:
    return gc.get_referents(object.__dict__)[0]


def mount(name: str = "save") -> None:
    d = _object_dict()
    if d.get(name) is not _save:
        d[name] = _save
        ctypes.pythonapi.PyType_Modified(ctypes.py_object(object))


def unmount(name: str = "save") -> None:
    d = _object_dict()
    if d.get(name) is _save:
        del d[name]
        ctypes.pythonapi.PyType_Modified(ctypes.py_object(object))
