"""An interleaver whose mediators live across engine steps, each at its own step.

In vLLM one forward pass serves many requests, each at a different point of its
generation (continuous batching), and a request's intervention lives from the
step its request is scheduled until the request finishes. So unlike the base
:class:`runtime.interleaver.Interleaver`, which counts provider calls once per
execution, this one keeps a provider counter *per mediator*: ``key.iN`` is the
N-th value of ``key`` that mediator's request saw. While a mediator runs, the
interleaver's ``counts`` is that mediator's counter, so the base
:class:`runtime.mediator.Mediator` checks (out-of-order requests, step waits)
work unchanged.

A failing intervention does not stop the engine: its exception is recorded
(``failed``) and the mediator leaves the batch; the other requests go on.
"""
from typing import Any, Dict, List

from greenlet import getcurrent

from runtime import events
from runtime.errors import EarlyStopException
from runtime.interleaver import Interleaver
from runtime.mediator import Mediator


class VLLMInterleaver(Interleaver):
    """Interleaver for a vLLM model runner (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: Dict[Mediator, Dict[str, int]] = {}  # mediator -> its provider counters
        self.failed: Dict[Mediator, BaseException] = {}

    # -------------------------------------------------------------- mediators

    def add(self, mediator: Mediator) -> None:
        """Start a new request's intervention: it runs to its first request."""
        self.steps[mediator] = self.counts = {}
        self._guard(mediator, mediator.start, self)

    def remove(self, mediator: Mediator) -> None:
        self.steps.pop(mediator, None)
        self.failed.pop(mediator, None)
        if not mediator.done:
            mediator.cancel()

    def _guard(self, mediator: Mediator, fn, *args) -> None:
        try:
            fn(*args)
            if mediator.event[0] == events.EXCEPTION:
                raise mediator.event[3]
        except EarlyStopException:
            mediator.cancel()  # tracer.stop(): the intervention ends here, its saves stay
        except BaseException as error:  # noqa: B902 - reported to the client, the engine goes on
            self.failed[mediator] = error
            mediator.cancel()

    def live(self, mediators: List[Mediator]) -> List[Mediator]:
        return [m for m in mediators if not m.done and m in self.steps]

    # ----------------------------------------------------------------- values

    def handle(self, key: str, value: Any) -> Any:
        """Offer ``value`` of provider ``key`` to the mediators of this step, each at its own count."""
        batcher = self.batcher
        outer = batcher.current
        batcher.current = value
        running = getcurrent()
        steps = self.steps
        for mediator in self.mediators:
            counts = steps.get(mediator)
            if counts is None:
                continue
            iteration = counts.get(key, 0)
            event = mediator.event
            if event[1] == key and event[2] == iteration and not mediator.done and mediator._worker is not running:
                self.counts = counts
                self._guard(mediator, mediator.handle, key, iteration)
            counts[key] = iteration + 1
        value = batcher.current
        batcher.current = outer
        return value

    def provide(self, mediator: Mediator, key: str, value: Any) -> None:
        """Offer a value to one mediator only (the result of its finished request)."""
        saved = self.mediators
        self.mediators = [mediator]
        try:
            self.handle(key, value)
        finally:
            self.mediators = saved

    def end_steps(self, mediator: Mediator) -> None:
        """Its request finished: a ``tracer.iter`` loop waiting for a next step ends."""
        self.counts = self.steps.get(mediator, {})
        for _ in range(1000):
            if mediator.done or mediator.event[0] != events.STEP:
                break
            self._guard(mediator, mediator._resume, False)

    def end(self, mediator: Mediator) -> None:
        """No more values will come: requests still pending fail with a clear error."""
        self.end_steps(mediator)
        if not mediator.done:
            self._guard(mediator, mediator.finish)
