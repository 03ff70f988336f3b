"""Errors raised by the runtime while interleaving interventions with a model."""


class NNsightError(Exception):
    """Base class of errors raised by the runtime."""


class OutOfOrderError(NNsightError):
    """A value was requested after the model had already produced it."""


class MissedProviderError(NNsightError, ValueError):
    """The model finished but an intervention was still waiting for a value."""


class EarlyStopException(BaseException):
    """Raised by ``tracer.stop()`` to end the model's execution early.

    A BaseException so that user ``except Exception`` blocks don't swallow it.
    """


class Cancelation(BaseException):
    """Thrown into an intervention's worker to unwind it when the trace is torn down."""
