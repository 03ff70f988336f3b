"""Static remotability checker: find code that cannot run on the server, without running it.

Inputs are files, directories (recursively) and module names (located on disk,
never imported). Each finding is a :class:`compiler.diagnostics.Diagnostic`
with a stable code from :data:`CODES`; ``nnsight-compile check`` prints them.
See docs/remotable-python.md.
"""
from .checker import SourceContext, check_text  # noqa: F401
from .codes import CODES, Code  # noqa: F401
from .report import Report, check_file, check_paths, check_source  # noqa: F401
from .targets import Target, TargetError, resolve  # noqa: F401
