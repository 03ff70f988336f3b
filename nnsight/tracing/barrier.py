"""``tracer.barrier(n)``: synchronise invokes that share values at the same module.

    with model.trace() as tracer:
        barrier = tracer.barrier(2)
        with tracer.invoke("Hello"):
            clean_hs = model.transformer.h[1].output[0]
            barrier()                       # clean_hs is materialised
        with tracer.invoke("World"):
            barrier()                       # waits for the first invoke
            model.transformer.h[1].output[0] = clean_hs
            output = model.lm_head.output.save()

Protocol (runtime/mediator.py, event BARRIER): calling ``barrier()`` inside an
invoke records the invoke as arrived and parks it with a BARRIER event; the
model keeps running and serving the other invokes. When the n-th participant
arrives, every participant is released — the waiting ones in invoke order,
then the one that arrived last — and each runs on to its next request, which
is served at once if it is for the value being provided right now (whatever
the invoke order). A barrier can be reused (once released it counts again
from zero). A barrier that never fills raises an error naming it when the
model finishes.
"""
from typing import List

from runtime import events

from .iteration import require_mediator


class Barrier:
    """A rendezvous point for ``participants`` invokes of one trace."""

    __slots__ = ("participants", "arrived")

    def __init__(self, participants: int) -> None:
        if isinstance(participants, bool) or not isinstance(participants, int) or participants < 1:
            raise ValueError(f"tracer.barrier(n) needs a positive number of participants, got {participants!r}.")
        self.participants = participants
        self.arrived: List = []

    def __call__(self) -> None:
        mediator = require_mediator("barrier()", "waits for other invokes")
        if mediator in self.arrived:
            raise RuntimeError("An invoke reached the same barrier twice before it was released.")
        self.arrived.append(mediator)
        mediator.send(events.BARRIER, None, self)

    # ----------------------------------------------------------- main side (mediator)

    def ready(self) -> bool:
        return len(self.arrived) >= self.participants

    def release(self, order) -> List:
        """Empty the barrier; the arrived mediators in ``order`` (the invoke order)."""
        arrived, self.arrived = self.arrived, []
        rank = {id(m): i for i, m in enumerate(order)}
        return sorted(arrived, key=lambda m: rank.get(id(m), len(rank)))

    def describe(self) -> str:
        names = ", ".join(m.name for m in self.arrived) or "none"
        return (f"tracer.barrier({self.participants}) was never released: only {len(self.arrived)} of "
                f"{self.participants} participants called it ({names}). Every participating invoke must "
                f"call `barrier()`, and n must equal the number of participants.")

    def __repr__(self) -> str:
        return f"Barrier({len(self.arrived)}/{self.participants})"


class BarrierMixin:
    """``tracer.barrier(n)``."""

    def barrier(self, participants: int) -> Barrier:
        """A barrier for ``participants`` invokes: each calls ``barrier()`` to wait for the others."""
        return Barrier(participants)
