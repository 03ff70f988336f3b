"""The local API (needs torch): models, envoys, tracing, and what importing nnsight installs."""
from .config import CONFIG
from .envoy import Envoy  # noqa: F401
from .modeling import LanguageModel, NNsight, TransformersModel  # noqa: F401
from . import pymount as _pymount
from .tracing import backwards as _backwards

__all__ = ["NNsight", "LanguageModel", "TransformersModel", "Envoy"]

if CONFIG.APP.PYMOUNT:
    # Some libraries check every public attribute of their classes when the class is
    # created (anyio's TypedAttributeSet, imported by transformers through
    # huggingface_hub); import them before `save` appears on `object`.
    try:
        import anyio.streams.tls  # noqa: F401
    except Exception:
        pass
    _pymount.mount()

_backwards.install()  # `with loss.backward():` opens a backward tracer

from . import fallback_report as _fallback_report  # noqa: E402

_fallback_report.install()  # in debug mode, fast paths that fall back say so

from . import repl as _repl  # noqa: E402
from .tracing import tracebacks as _tracebacks  # noqa: E402

_tracebacks.install()  # tracebacks of errors in traces show the user's code only
_repl.install()  # traces typed at the classic `python` prompt

# Load what the first trace would otherwise import on the way (source tracing, syntax passes):
# importing here keeps the first trace at a call site as cheap as later ones.
from .tracing import hookplan as _hookplan  # noqa: E402
import compiler.passes  # noqa: E402,F401
import compiler.frontend.accesses  # noqa: E402,F401  (AccessReport, for the hook plan)

_hookplan._envoy_types()
