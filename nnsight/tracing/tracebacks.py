"""Exceptions from traced code, shown against the user's own source.

Units are compiled with the user's file name and line numbers, so the frames
that ran user code already read right; this drops the frames of nnsight's
machinery (unless ``CONFIG.APP.DEBUG``) and the "during handling" chain.
"""
import os
import types

def _package_dir(module) -> str:
    return os.path.dirname(os.path.abspath(module.__file__)) + os.sep


def _internal_dirs():
    import compiler
    import nnsight
    import runtime

    return tuple(_package_dir(m) for m in (nnsight, runtime, compiler))


def _internal(filename: str, dirs) -> bool:
    f = os.path.abspath(filename)
    return f.startswith(dirs) or (os.sep + "greenlet" + os.sep) in f


def clean(error: BaseException) -> BaseException:
    from ..config import CONFIG

    error.__suppress_context__ = True
    if CONFIG.APP.DEBUG:
        return error
    frames = []
    dirs = _internal_dirs()
    tb = error.__traceback__
    while tb is not None:
        if not _internal(tb.tb_frame.f_code.co_filename, dirs):
            frames.append(tb)
        tb = tb.tb_next
    new = None
    for tb in reversed(frames):
        new = types.TracebackType(new, tb.tb_frame, tb.tb_lasti, tb.tb_lineno)
    return error.with_traceback(new)
