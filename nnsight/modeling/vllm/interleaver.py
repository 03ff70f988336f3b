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

Only the modules some live intervention can touch take part (``watched``): each request's
hook plan (:func:`nnsight.tracing.hookplan.modules_to_patch`, read from its program's IR)
names the modules it may read, write or skip; a module no live mediator names runs its own
forward at once, without offering its input and output to the step's mediators. A request
whose plan cannot be named statically watches every module (``watch_all``, counted as the
``vllm.watch_all`` fast-path fallback). A mediator's counter of a module it never names is
then not advanced, as in an ordinary trace, where such a module is not patched at all.

A ``tracer.iter`` loop waits for each step's start (a STEP event at the root's input). Answering
it there would cost a hand-off to the hub of its own, and the loop body then waits again for the
first value it reads, usually the logits. When the waiting mediator has a static plan (and no
provider is sharded), the answer is deferred (``_pending``) to the step's first hand-off, or to the
first provider of a module its plan names, whichever comes first: the mediators that waited are
woken there, in invoke order and before any other intervention runs, and get the value being
offered if they ask for it. No provider their plan names went by in between, so nothing they could
read was missed; a step that reaches neither wakes them at its end (:meth:`end_step`). The
``logits`` / ``samples`` providers (modules that return their input) run on the hub in one
hand-off when an intervention waits for either end of them (:meth:`offer_through`): a woken loop
gets the logits in the hand-off that woke it, so a decode step costs one hand-off, not two.

Under tensor parallelism, ``shards`` names the providers whose value is only this
rank's part (:mod:`.tensor_parallel`): when a mediator reads or writes one, the
value is gathered before it is offered and this rank's part of the result is
put back afterwards.
"""
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from greenlet import getcurrent

from runtime import events
from runtime.errors import EarlyStopException
from runtime.interleaver import Interleaver
from runtime.mediator import Mediator

from .mediator import Hub
from .tensor_parallel import INPUT, OUTPUT, Shard

_READ = (events.VALUE, events.SWAP)


class VLLMInterleaver(Interleaver):
    """Interleaver for a vLLM model runner (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: Dict[Mediator, Dict[str, int]] = {}  # mediator -> its provider counters
        self.failed: Dict[Mediator, BaseException] = {}
        self.stopped: Set[Mediator] = set()  # mediators whose intervention called tracer.stop()
        self.shards: Dict[str, Shard] = {}  # provider key -> how it is sharded (TP > 1 only)
        # module path -> how many live mediators may touch it (plus the pinned root: the step key)
        self.watched: Dict[str, int] = {}
        self.watch_all = 0  # live mediators without a static plan: every module takes part
        self._plans: Dict[Mediator, Optional[Tuple[str, ...]]] = {}
        # STEP answers deferred to the step's first hand-off: (mediator, step), and their plans' paths
        self._pending: List[Tuple[Mediator, int]] = []
        self._pending_paths: Set[str] = set()
        self.hub = Hub()  # the thread the interventions run on: whatever resumes one runs there

    # ------------------------------------------------------------ watched modules

    def pin(self, path: str) -> None:
        """Always offer ``path``'s values (the root: its input marks the start of each step)."""
        self.watched[path] = self.watched.get(path, 0) + 1

    def _watch(self, mediator: Mediator, paths: Optional[Iterable[str]]) -> None:
        if mediator in self._plans:
            return
        if paths is None:
            self.watch_all += 1
            self._plans[mediator] = None
            return
        own = self._plans[mediator] = tuple(set(paths))
        watched = self.watched
        for path in own:
            watched[path] = watched.get(path, 0) + 1

    def _unwatch(self, mediator: Mediator) -> None:
        if mediator not in self._plans:
            return
        own = self._plans.pop(mediator)
        if own is None:
            self.watch_all -= 1
            return
        watched = self.watched
        for path in own:
            left = watched[path] - 1
            if left:
                watched[path] = left
            else:
                del watched[path]

    def _forward(self, path: str, original):
        """The base wrapper, entered only while some live mediator may touch ``path``."""
        inner = super()._forward(path, original)
        watched = self.watched
        interleaver = self

        def nnsight_forward(*args, **kwargs):
            if interleaver.active and (path in watched or interleaver.watch_all):
                if interleaver._pending and len(interleaver.mediators) == 1 and path in interleaver._pending_paths:
                    # the base wrapper counts the input of one mediator that does not wait for it
                    # without offering it: wake a deferred step start first (it may ask for it)
                    interleaver.hub.call(interleaver._wake_pending)
                return inner(*args, **kwargs)
            return original(*args, **kwargs)

        nnsight_forward.__nnsight_original__ = original
        nnsight_forward.__wrapped__ = original
        return nnsight_forward

    # -------------------------------------------------------------- mediators

    def add(self, mediator: Mediator, paths: Optional[Iterable[str]] = None) -> None:
        """Start a new request's intervention: it runs to its first request.

        ``paths``: the module paths its program may touch (its hook plan); None: every module.
        """
        self.add_all([(mediator, paths)])

    def add_all(self, started: List[Tuple[Mediator, Optional[Iterable[str]]]]) -> None:
        """:meth:`add` for several requests, in order, with one hand-off to the hub."""
        for mediator, paths in started:
            self._watch(mediator, paths)
            self.steps[mediator] = {}
        if started:
            self.hub.call(self._start_all, [mediator for mediator, _ in started])

    def _start_all(self, mediators: List[Mediator]) -> None:
        for mediator in mediators:
            self.counts = self.steps[mediator]
            self._guard(mediator, mediator.start, self)

    def remove(self, mediator: Mediator) -> None:
        if self._pending:
            self._pending = [entry for entry in self._pending if entry[0] is not mediator]
        self.steps.pop(mediator, None)
        self.failed.pop(mediator, None)
        self.stopped.discard(mediator)
        self._unwatch(mediator)
        if not mediator.done:
            self.hub.call(mediator.cancel)

    def _guard(self, mediator: Mediator, fn, *args) -> None:
        try:
            fn(*args)
            if mediator.event[0] == events.EXCEPTION:
                raise mediator.event[3]
        except EarlyStopException:
            # tracer.stop(): the intervention ends here, its saves stay; the client aborts the
            # request (RequestHelper.stopped).
            self.stopped.add(mediator)
            mediator.cancel()
        except BaseException as error:  # noqa: B902 - reported to the client, the engine goes on
            self.failed[mediator] = error
            mediator.cancel()

    def live(self, mediators: List[Mediator]) -> List[Mediator]:
        return [m for m in mediators if not m.done and m in self.steps]

    # ----------------------------------------------------------------- values

    def handle(self, key: str, value: Any) -> Any:
        """Offer ``value`` of provider ``key`` to the mediators of this step, each at its own count."""
        shards = self.shards
        if shards and key in shards:
            return self._handle_sharded(shards[key], key, value)
        return self._offer(key, value)

    def _handle_sharded(self, shard: Shard, key: str, value: Any) -> Any:
        """Gather -> offer -> re-shard, if a mediator reads or writes ``key`` now (else just offer)."""
        readers = self._readers(key)
        if not readers:
            return self._offer(key, value)
        result = self._offer(key, shard.gather(value))
        try:
            return shard.scatter(result)
        except Exception as error:  # e.g. a swapped value of the wrong width: the engine goes on
            for mediator in readers:
                if mediator not in self.failed:
                    self.failed[mediator] = error
                    self.hub.call(mediator.cancel)
            return value

    def _readers(self, key: str) -> List[Mediator]:
        """The mediators of this step that read or write ``key`` now (a sharded value is gathered)."""
        steps = self.steps
        found = []
        for mediator in self.mediators:
            counts = steps.get(mediator)
            event = mediator.event
            if (counts is not None and event[1] == key and event[0] in _READ and not mediator.done
                    and event[2] == counts.get(key, 0)):
                found.append(mediator)
        return found

    def skip(self, mediator: Mediator, input_key: str, value: Any) -> None:
        """``.skip(value)`` of a module whose output is sharded: the module returns this rank's part."""
        shard = self.shards.get(input_key[:-len(INPUT)] + OUTPUT) if self.shards else None
        super().skip(mediator, input_key, value if shard is None else shard.scatter(value))

    def _offer(self, key: str, value: Any) -> Any:
        """:meth:`handle` without tensor parallelism: each waiting mediator at its own count.

        When none of the step's mediators waits for ``key`` now, each counter moves on here;
        otherwise the offer runs on the hub (one hand-off for all of the step's mediators).
        """
        steps = self.steps
        mediators = self.mediators
        deferred = None
        for mediator in mediators:
            counts = steps.get(mediator)
            if counts is not None:
                event = mediator.event
                if event[1] == key and event[2] == counts.get(key, 0) and not mediator.done:
                    if event[0] == events.STEP and not self.shards:
                        plan = self._plans.get(mediator)
                        if plan is not None:  # woken at the step's first hand-off (module docstring)
                            if deferred is None:
                                deferred = []
                            deferred.append((mediator, event[2], plan))
                            continue
                    return self.hub.call(self._offer_waiting, key, value)
        if self._pending and _path_of(key) in self._pending_paths:
            return self.hub.call(self._offer_waiting, key, value)
        for mediator in mediators:
            counts = steps.get(mediator)
            if counts is not None:
                counts[key] = counts.get(key, 0) + 1
        if deferred is not None:
            for mediator, step, plan in deferred:
                self._pending.append((mediator, step))
                self._pending_paths.update(plan)
        return value

    def offer_through(self, path: str, module: Any, value: Any) -> Any:
        """``module(value)`` for a provider that returns its input (``model.logits`` / ``model.samples``,
        at ``path``): on the hub, in one hand-off for both of its ends, when an intervention waits for
        either (or a deferred step start waits for it); else here, where nobody is resumed."""
        if not self.shards and self._wants(path):
            return self.hub.call(module, value)
        return module(value)

    def _wants(self, path: str) -> bool:
        if self._pending and path in self._pending_paths:
            return True
        in_key, out_key = path + ".input", path + ".output"
        steps = self.steps
        for mediator in self.mediators:
            counts = steps.get(mediator)
            if counts is not None and not mediator.done:
                key, at = mediator.event[1], mediator.event[2]
                if (key == in_key or key == out_key) and at == counts.get(key, 0):
                    return True
        return False

    def end_step(self) -> None:
        """The engine step is over: wake the loops whose step start is still deferred."""
        if self._pending:
            self.hub.call(self._wake_pending)

    def _wake_pending(self) -> None:
        """On the hub: answer the deferred STEP events (the step started), in invoke order."""
        pending = self._pending
        self._pending = []
        self._pending_paths = set()
        steps = self.steps
        for mediator, step in pending:
            counts = steps.get(mediator)
            event = mediator.event
            if counts is not None and not mediator.done and event[0] == events.STEP and event[2] == step:
                self.counts = counts
                self._guard(mediator, mediator.handle, event[1], step)

    def _offer_waiting(self, key: str, value: Any) -> Any:
        """:meth:`_offer` on the hub: resume each mediator waiting for ``key`` (invoke order), after
        the deferred step starts."""
        if self._pending:
            self._wake_pending()
        batcher = self.batcher
        outer, outer_rows = batcher.current, batcher.rows
        batcher.current, batcher.rows = value, [None, None, None]  # (each request's row: one split)
        running = getcurrent()
        steps = self.steps
        for mediator in self.mediators:
            counts = steps.get(mediator)
            if counts is None:
                continue
            iteration = counts.get(key, 0)
            event = mediator.event
            worker = mediator._worker
            if (event[1] == key and event[2] == iteration and not mediator.done
                    and (worker is None or worker.greenlet is not running)):
                self.counts = counts
                self._guard(mediator, mediator.handle, key, iteration)
            counts[key] = iteration + 1
        value = batcher.current
        batcher.current, batcher.rows = outer, outer_rows
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
        self.hub.call(self._end_steps, mediator)

    def _end_steps(self, mediator: Mediator) -> None:
        if self._pending:
            self._wake_pending()
        self.counts = self.steps.get(mediator, {})
        for _ in range(1000):
            if mediator.done or mediator.event[0] != events.STEP:
                break
            self._guard(mediator, mediator._resume, False)

    def end(self, mediator: Mediator) -> None:
        """No more values will come: requests still pending fail with a clear error."""
        self.hub.call(self._end, mediator)

    def _end(self, mediator: Mediator) -> None:
        self._end_steps(mediator)
        if not mediator.done:
            self._guard(mediator, mediator.finish)


def _path_of(key: str) -> str:
    """The module path of a provider key (``"model.layers.0.output"`` -> ``"model.layers.0"``)."""
    for end in (".output", ".input"):
        if key.endswith(end):
            return key[:-len(end)]
    return key
