"""A Mediator runs one intervention body on its own worker, in strict ping-pong with the model.

The worker is a greenlet: only one side runs at a time, and a hand-off costs a
stack switch instead of an OS-thread wake-up (see docs/performance.md for the
measurement behind this choice). The protocol: the
worker sends events (VALUE, SWAP, SKIP, END, EXCEPTION), the interleaver
answers them as the model reaches the matching providers.
"""
from typing import Any, Dict, Optional, Tuple

from greenlet import getcurrent, greenlet

from . import events
from .errors import Cancelation, MissedProviderError, OutOfOrderError

Event = Tuple[int, Optional[str], int, Any]
_END: Event = (events.END, None, 0, None)
_VALUE, _SWAP, _SKIP, _EXCEPTION = events.VALUE, events.SWAP, events.SKIP, events.EXCEPTION
# Mediators a barrier released while a provider is being handled (Interleaver.released): each
# gets that value too if it asks for it next, even if it comes before the releasing mediator.
_UNBOUND = object()


def _put_back(ns: Dict[str, Any], bindings: Dict[str, Any], name: str, own: Any, prior: Any) -> None:
    """After an invoke's code ran with ``ns[name] = own``: keep a value it assigned (or a deletion)
    as the invoke's own from then on, else give the namespace back what it held (``prior``)."""
    current = ns.get(name, _UNBOUND)
    if current is not own:  # rebound (or deleted) by the intervention
        if current is _UNBOUND:
            del bindings[name]
        else:
            bindings[name] = current
    elif prior is _UNBOUND:
        del ns[name]
    else:
        ns[name] = prior


class _Worker(greenlet):
    """The greenlet of a mediator; ``getcurrent().mediator`` finds it from user code.

    One per mediator, not pooled: a greenlet reused across traces keeps frame links to
    the stack of the trace that first started it, and crashes the interpreter when code
    (torch, IPython) later walks that stack.
    """

    mediator: "Mediator" = None  # type: ignore[assignment]


def current_mediator() -> Optional["Mediator"]:
    """The mediator whose intervention code is running right now, if any."""
    return getattr(getcurrent(), "mediator", None)


class Mediator:
    """One intervention: code to exec in a namespace, and its slice of the batch.

    code: a code object built from an IR unit (see :mod:`runtime.builder`).
    namespace: the globals the code runs in (shared between invokes of a trace).
    batch_group: ``(start, size)`` of this invoke's rows, or None for the whole batch.
    """

    __slots__ = ("code", "namespace", "batch_group", "name", "iteration", "event", "done",
                 "interleaver", "_worker", "caches", "bindings", "side", "__weakref__")

    def __init__(self, code, namespace: Dict[str, Any], batch_group=None, name: str = "invoke",
                 bindings: Optional[Dict[str, Any]] = None):
        self.code = code
        # Names whose values are this invoke's own (a loop variable as it was when the invoke's
        # `with` was reached): put into the shared namespace while its code runs (see `_switch`).
        self.bindings = bindings or None
        self.namespace = namespace
        self.batch_group = batch_group
        self.name = name
        self.iteration = 0
        self.event: Event = _END
        self.done = False
        self.interleaver = None
        self._worker: Optional[_Worker] = None
        self.caches = None
        # A guarded request's check on the tensor side (runtime.loader.tensor_side): the worker switches
        # its torch function mode on while it runs and off when it hands over to the model. None on a
        # plain local trace. (Switched on the worker's side, so that the main side's switches into the
        # worker keep their shape: with a frame of their own around them, a torch C++ error raised in a
        # worker resumed from the model's hooks crashed the interpreter as it recorded its backtrace.)
        self.side = None

    def guard(self, side) -> None:
        """Have the worker switch ``side`` (a :class:`runtime.loader.tensor_side.TensorSide`) on while
        it runs (set before :meth:`start`)."""
        self.side = side

    # ----------------------------------------------------------------- main side

    def start(self, interleaver) -> None:
        """Start the worker; it runs until its first request (or to the end)."""
        self.interleaver = interleaver
        worker = _Worker(self._run)
        worker.mediator = self
        self._worker = worker
        self._resume(None)

    def _run(self, _ignored=None) -> Event:
        side = self.side
        if side is not None:
            side.enter()
        try:
            exec(self.code, self.namespace)
        except Cancelation:
            pass
        except BaseException as exc:  # delivered to the interleaver, re-raised on the model side
            # Re-raising it there replaces its implicit context (the user's own "during
            # handling of" exception); keep it for nnsight/tracing/tracebacks.py to put back.
            exc.__nnsight_context__ = exc.__context__
            return (events.EXCEPTION, None, 0, exc)
        finally:
            if side is not None:
                side.leave()  # (raises if the request took the check off: the job fails)
        return _END

    def _switch(self, worker, method, arg):
        """Run the worker with this invoke's own bindings in the namespace, then put back the others.

        Whatever the namespace held before (another invoke's values, when an intervention calls a
        hooked module) returns, except where the intervention rebound a name: like any assignment,
        that one stays, and is this invoke's value from then on.
        """
        ns, bindings = self.namespace, self.bindings
        if len(bindings) == 1:  # the usual case (a loop variable): ~2 us less per switch
            return self._switch_one(ns, bindings, method, arg)
        before = {name: ns.get(name, _UNBOUND) for name in bindings}
        ns.update(bindings)
        try:
            return method(arg)
        finally:
            for name, prior in before.items():
                _put_back(ns, bindings, name, bindings[name], prior)

    @staticmethod
    def _switch_one(ns: Dict[str, Any], bindings: Dict[str, Any], method, arg):
        """:meth:`_switch` for one binding, without the dictionaries."""
        for name, own in bindings.items():
            break
        prior = ns.get(name, _UNBOUND)
        ns[name] = own
        try:
            return method(arg)
        finally:
            _put_back(ns, bindings, name, own, prior)

    def _resume(self, response: Any) -> None:
        worker = self._worker
        worker.parent = getcurrent()  # the worker's final return comes back here
        event = worker.switch(response) if self.bindings is None else self._switch(worker, worker.switch, response)
        # The common case, inlined: a request for a value the model has not produced yet.
        if event[0] <= _SKIP and self.interleaver.counts.get(event[1], 0) <= event[2]:
            self.event = event
            return
        self._settle(event)

    def _throw(self, exc: BaseException) -> None:
        worker = self._worker
        worker.parent = getcurrent()
        self._settle(worker.throw(exc) if self.bindings is None else self._switch(worker, worker.throw, exc))

    def _settle(self, event: Event) -> None:
        """Record the worker's next event; a request for a value already gone by fails now."""
        while True:
            self.event = event
            kind = event[0]
            if kind == events.END or kind == events.EXCEPTION:
                self.done = True
                self._worker = None
                return
            if kind <= events.SKIP and self.interleaver.counts.get(event[1], 0) > event[2]:  # provided
                worker = self._worker
                worker.parent = getcurrent()
                missed = OutOfOrderError(
                    f"Value was missed for {event[1]}.i{event[2]}. Did you call an Envoy out of "
                    f"order? (the model already computed it before this line asked for it; access "
                    f"modules in forward-pass order, or use a separate invoke)")
                event = worker.throw(missed) if self.bindings is None else self._switch(worker, worker.throw, missed)
                continue
            if kind == events.BARRIER and event[3].ready():
                # The last participant arrived: release the others (invoke order), then this one.
                for other in event[3].release(self.interleaver.mediators):
                    if other is not self and other._worker is not None:
                        other._resume(None)
                        self.interleaver.released.append(other)
                worker = self._worker
                worker.parent = getcurrent()
                event = worker.switch(None) if self.bindings is None else self._switch(worker, worker.switch, None)
                continue
            return

    def handle(self, key: str, iteration: int) -> None:
        """Give this mediator provider ``key`` (its ``iteration``-th value), which it waits for.

        Answers every event that the value satisfies (reads, swaps, skips);
        returns when the mediator waits for a later provider or has finished.
        Raises the intervention's exception if it failed.
        """
        interleaver = self.interleaver
        while True:
            kind, rkey, rit, payload = self.event
            if rkey != key or rit != iteration:
                if kind == _EXCEPTION:
                    raise payload
                if interleaver.released:
                    self._serve_released(key, iteration)
                return
            if kind == _VALUE:
                self._resume(interleaver.batcher.narrow(self.batch_group))
            elif kind == _SWAP:
                interleaver.batcher.swap(self.batch_group, payload)
                self._resume(None)
            elif kind == events.SKIP:
                interleaver.skip(self, key, payload)
                self._resume(None)
            elif kind == events.STEP:
                self._resume(True)  # the model started the step this mediator waited for
            else:
                return  # e.g. BARRIER: waits for its peers

    def _serve_released(self, key: str, iteration: int) -> None:
        """Give the value being provided to mediators a barrier just released, if they want it."""
        released = self.interleaver.released
        while released:
            other = released.pop(0)
            event = other.event
            if not other.done and event[1] == key and event[2] == iteration:
                other.handle(key, iteration)

    def finish(self) -> None:
        """After the model ran: fail any request that can never be satisfied now."""
        for _ in range(1000):
            kind, rkey, rit, payload = self.event
            if kind == events.EXCEPTION:
                raise payload
            if self.done:
                return
            if kind == events.STEP:  # no next step will come (normally answered before the result)
                self._resume(False)
                continue
            self._throw(MissedProviderError(self._missed_message(kind, rkey, rit, payload)))
        self.cancel()

    def _missed_message(self, kind: int, rkey, rit: int, payload: Any) -> str:
        if kind == events.BARRIER:
            return payload.describe()
        ran = self.interleaver.counts.get(rkey, 0) if self.interleaver is not None else 0
        if 0 < ran <= rit:
            return (
                f"Execution complete but `{rkey}.i{rit}` was not provided: the model ran `{rkey}` "
                f"{ran} time(s) (iterations 0-{ran - 1}) and this intervention asked for iteration "
                f"{rit}. A generation runs steps 0..max_new_tokens-1 (fewer if it ends early): check "
                f"`tracer.next()` calls and `tracer.iter[...]` bounds.")
        if isinstance(rkey, str) and rkey.endswith(".grad"):  # "<id(tensor)>.grad" (backwards.py)
            return (
                f"Execution complete but `{rkey}.i{rit}` was not provided. Did you call an Envoy "
                f"out of order? The number is the id() of the tensor whose `.grad` this line waits "
                f"for. Gradients arrive in reverse order of the forward pass: read the `.grad` of "
                f"later layers' values first, and only of tensors the loss depends on.")
        return (
            f"Execution complete but `{rkey}.i{rit}` was not provided. Did you call an Envoy "
            f"out of order? Investigate why this module was not called (it may not be part "
            f"of this model's forward pass, or the model stopped before reaching it).")

    def cancel(self) -> None:
        """Unwind the worker (used when the trace is torn down early)."""
        worker = self._worker
        if worker is not None and not worker.dead:
            worker.parent = getcurrent()
            try:
                worker.throw(Cancelation())
            except Exception:
                pass
        self._worker = None
        self.done = True

    # --------------------------------------------------------------- worker side

    def send(self, kind: int, key: Optional[str], payload: Any = None) -> Any:
        """Called from the intervention code: wait until the interleaver answers."""
        side = self.side
        if side is None:
            return self._worker.parent.switch((kind, key, self.iteration, payload))
        side.leave()  # (the model runs without it)
        try:
            return self._worker.parent.switch((kind, key, self.iteration, payload))
        finally:
            side.enter()

    def request(self, key: str) -> Any:
        return self.send(events.VALUE, key)

    def swap(self, key: str, value: Any) -> None:
        self.send(events.SWAP, key, value)
