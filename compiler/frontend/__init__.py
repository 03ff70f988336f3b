"""Frontend: from a frame entering a tracing context to an IR Program.

capture (frame -> source text) -> locate (line -> with-statement) ->
lower (with-body -> units, bindings, header), cached per call site.
"""
from .accesses import AccessReport, envoy_chains, scan_accesses  # noqa: F401
from .cache import clear, lower_cached, program_for_frame  # noqa: F401
from .capture import REPL_HISTORY, CapturedSource, register_repl_source, source_for_frame  # noqa: F401
from .errors import (  # noqa: F401
    FrontendError,
    SourceNotFoundError,
    UnsupportedSyntaxError,
    WithBlockNotFoundError,
)
from .dedent import indent_source  # noqa: F401
from .features import detect_features  # noqa: F401
from .locate import LocatedWith, locate_with  # noqa: F401
from .lower import lower  # noqa: F401
