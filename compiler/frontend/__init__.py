"""Frontend: from a frame entering a tracing context to an IR Program.

capture (frame -> source text) -> locate (line -> with-statement) ->
lower (with-body -> units, bindings, header), cached per call site.

``lower`` and ``scan_accesses`` run on Python's ``ast`` when that provably
gives the libcst result (:mod:`.fastpath`), so importing this package does not
import libcst; the libcst-based modules load on first use.
"""
import importlib
import sys
import types

from .capture import REPL_HISTORY, CapturedSource, register_repl_source, source_for_frame  # noqa: F401
from .errors import (  # noqa: F401
    FrontendError,
    SourceNotFoundError,
    UnsupportedSyntaxError,
    WithBlockNotFoundError,
)
from .fast_accesses import scan_accesses  # noqa: F401
from .fastpath import lower  # noqa: F401

_LAZY = {
    "AccessReport": "accesses",
    "envoy_chains": "accesses",
    "clear": "cache",
    "lower_cached": "cache",
    "program_for_frame": "cache",
    "indent_source": "dedent",
    "detect_features": "features",
    "LocatedWith": "locate",
    "locate_with": "locate",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    value = getattr(importlib.import_module("." + module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    # Importing the submodule ``compiler.frontend.lower`` (the libcst path, loaded on first
    # use) must not replace the package's ``lower`` function with that module.
    def __setattr__(self, name, value):
        if name == "lower" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
