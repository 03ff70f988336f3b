"""nnsight: look inside neural networks while they run.

    from nnsight import LanguageModel
    model = LanguageModel("path/or/id")
    with model.trace("The capital of France is"):
        hidden = model.model.layers[0].output.save()

Each ``with`` block is compiled to a portable intervention IR (``compiler``)
and executed by the interleaving runtime (``runtime``).
"""
from runtime.errors import MissedProviderError, OutOfOrderError  # noqa: F401
from runtime.saves import save  # noqa: F401
from compiler.policy import register  # noqa: F401  (send a module/package by value to remote servers)

from .config import CONFIG  # noqa: F401
from .envoy import Envoy  # noqa: F401
from .modeling import LanguageModel, NNsight  # noqa: F401
from . import pymount as _pymount
from .tracing import backwards as _backwards

from compiler import __version__  # noqa: E402,F401

if CONFIG.APP.PYMOUNT:
    # Some libraries check every public attribute of their classes when the class is
    # created (anyio's TypedAttributeSet, imported by transformers through
    # huggingface_hub); import them before `save` appears on `object`.
    try:
        import anyio.streams.tls  # noqa: F401
    except Exception:
        pass
    _pymount.mount()

_backwards.install()  # `with loss.backward():` opens a backward tracer (design §5.6)

from . import repl as _repl  # noqa: E402
from .tracing import tracebacks as _tracebacks  # noqa: E402

_tracebacks.install()  # tracebacks of errors in traces show the user's code only (design §7)
_repl.install()  # traces typed at the classic `python` prompt (design §2.1, case 4)

# Load what the first trace would otherwise import on the way (source tracing, syntax passes):
# importing here keeps the first trace at a call site as cheap as later ones.
from .tracing import hookplan as _hookplan  # noqa: E402
import compiler.passes  # noqa: E402,F401
import compiler.frontend.accesses  # noqa: E402,F401  (AccessReport, for the hook plan)

_hookplan._envoy_types()


def login(api_key: str, host: str = None, save: bool = True) -> None:
    """Use ``api_key`` (and ``host``, if given) for ``remote=True``; ``save`` keeps them for later sessions."""
    CONFIG.API.APIKEY = api_key
    if host is not None:
        CONFIG.API.HOST = host
    if save:
        CONFIG.set_default_api_key(api_key)


def __getattr__(name):  # `from nnsight import DiffusionModel`, imported on first use
    if name == "DiffusionModel":
        from .modeling.diffusion import DiffusionModel

        return DiffusionModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
