"""Errors raised by the runtime while interleaving interventions with a model."""


class NNsightError(Exception):
    """Base class of errors raised by the runtime."""


class OutOfOrderError(NNsightError):
    """A value was requested after the model had already produced it."""


class SaveOutsideTraceError(NNsightError, RuntimeError, ValueError):
    """``.save()`` / ``nnsight.save()`` was called with no trace running.

    A RuntimeError (what the call is: a misuse of the tracing state) and a
    ValueError (what nnsight 0.8 raised), so code catching either keeps working.
    """


class SourceNotAvailable(NNsightError, ValueError):
    """``.source`` can't give what was asked: no Python source, a module call, outside a trace, ...

    The class nnsight 0.8 raises for these (``nnsight.intervention.source``);
    a ValueError, as this package raised before.
    """


class MissedProviderError(NNsightError, ValueError):
    """The model finished but an intervention was still waiting for a value."""


class EarlyStopException(BaseException):
    """Raised by ``tracer.stop()`` to end the model's execution early.

    A BaseException so that user ``except Exception`` blocks don't swallow it.
    """


class Cancelation(BaseException):
    """Thrown into an intervention's worker to unwind it when the trace is torn down."""
