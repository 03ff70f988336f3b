"""The Interleaver runs a model and its interventions together, one side at a time.

For the duration of one execution it patches ``forward`` on the instances of
the modules a program can touch. Each patched forward offers its inputs and
its output to the mediators (``handle``) in invoke order; a mediator waiting
for that provider gets its slice of the value, may swap it, and runs on until
it needs a later value. Nothing stays installed on the model afterwards, so
several wrappers of one model never interfere and nothing leaks.
"""
from types import MethodType
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
from greenlet import getcurrent

from . import events
from .batcher import Batcher
from .mediator import Mediator

_MISSING = object()
RESULT = "result"  # provider of the traced function's return value


def _combine_skips(skips: List[Tuple[Any, Any]], total: int) -> Any:
    """Output of a skipped module: each invoke's substitute, stacked in batch order."""
    if any(group is None for group, _ in skips):  # an empty invoke's substitute is the whole batch
        return next(value for group, value in reversed(skips) if group is None)
    covered = sum(group[1] for group, _ in skips)
    if total and covered != total:
        raise ValueError(
            f"A module was skipped in invokes covering {covered} of the {total} batch rows. With "
            f"several invokes, `.skip(value)` must be called in every invoke, each "
            f"with a value for its own rows.")
    if len(skips) == 1:
        return skips[0][1]
    parts = sorted(skips, key=lambda gv: (gv[0] or (0, 0))[0])
    first = parts[0][1]
    if isinstance(first, torch.Tensor):
        return torch.cat([v for _, v in parts], dim=0)
    if isinstance(first, tuple):
        return tuple(_combine_skips([(g, v[i]) for g, v in parts], total) for i in range(len(first)))
    return first


class Interleaver:
    """Coordinates one model execution with its mediators."""

    __slots__ = ("mediators", "batcher", "counts", "active", "_patched", "_skips", "_wrappers", "sources",
                 "caches", "released", "_repatch", "__weakref__")

    def __init__(self) -> None:
        self.mediators: List[Mediator] = []
        self.batcher = Batcher()
        self.counts: Dict[str, int] = {}
        self.active = False
        self._patched: List[Tuple[torch.nn.Module, Any]] = []
        self._skips: Dict[str, List[Tuple[Any, Any]]] = {}
        self._wrappers: Dict[int, tuple] = {}  # id(module) -> (module, forward it wraps, path, wrapper)
        # the last list `patch` took whole, to re-apply it in two tight loops when it comes again:
        # {"last": (list, [(module dict, module, class, class forward)], [(module dict, wrapper)],
        # patched entries)}. A dict, so the model's finalizer can drop it (see forget_wrappers).
        self._repatch: Dict[str, tuple] = {}
        # module -> its forward rewritten for `.source` (runtime/source.py), used instead of its own
        self.sources: Dict[torch.nn.Module, Any] = {}
        # (cache, batch group) observers fed every provider's final value (tracer.cache())
        self.caches: List[Tuple[Any, Any]] = []
        # mediators a barrier just released, still to be offered the value being provided
        self.released: List[Mediator] = []

    # ------------------------------------------------------------- providers

    def provided(self, key: str, iteration: int) -> bool:
        """Has the model already produced ``key`` for ``iteration``?"""
        return self.counts.get(key, 0) > iteration

    def handle(self, key: str, value: Any) -> Any:
        """Offer a provider's value to the mediators waiting for it; return the (maybe swapped) value."""
        counts = self.counts
        iteration = counts.get(key, 0)
        mediators = self.mediators
        if len(mediators) == 1:  # one intervention: the general loops below, unrolled
            mediator = mediators[0]
            event = mediator.event
            if event[1] == key and event[2] == iteration and mediator._worker is not getcurrent():
                batcher = self.batcher
                outer = batcher.current
                batcher.current = value
                mediator.handle(key, iteration)
                value = batcher.current
                batcher.current = outer
            counts[key] = iteration + 1
            if self.caches:
                self._observe(key, value)
            return value
        for mediator in mediators:
            event = mediator.event
            if event[1] == key and event[2] == iteration:
                break
        else:  # nobody waits for this provider: the common, cheap case
            counts[key] = iteration + 1
            if self.caches:
                self._observe(key, value)
            return value
        batcher = self.batcher
        outer = batcher.current
        batcher.current = value
        running = getcurrent()  # an intervention calling a hooked module must not be re-entered
        for mediator in self.mediators:
            event = mediator.event
            if event[1] == key and event[2] == iteration and mediator._worker is not running:
                mediator.handle(key, iteration)
        counts[key] = iteration + 1
        value = batcher.current
        batcher.current = outer
        if self.caches:
            self._observe(key, value)
        return value

    def _observe(self, key: str, value: Any) -> None:
        """Offer a provider's final value to the caches, narrowed to each cache's invoke."""
        batcher = self.batcher
        outer = batcher.current
        batcher.current = value
        try:
            for cache, group in self.caches:
                if cache.wants(key) is not None:
                    cache.add(key, batcher.narrow(group))
        finally:
            batcher.current = outer

    def skip(self, mediator: Mediator, input_key: str, value: Any) -> None:
        self._skips.setdefault(input_key, []).append((mediator.batch_group, value))

    # --------------------------------------------------------------- patching

    def patch(self, modules: Iterable[Tuple[str, torch.nn.Module]]) -> None:
        """Route the forward of each ``(path, module)`` through :meth:`handle`."""
        sources = self.sources
        patched = self._patched
        again = self._repatch.get("last")
        if again is not None and again[0] is modules and not sources and not patched:
            # the same list as last time (a cached hook plan): every module still has no forward
            # of its own and the same class forward -> the same wrappers apply
            for d, module, cls, current in again[1]:
                if "forward" in d or type(module) is not cls or cls.forward is not current:
                    break
            else:
                for d, wrapper in again[2]:
                    d["forward"] = wrapper
                patched.extend(again[3])
                return
        self._repatch.clear()
        plain = not sources and not patched and isinstance(modules, list)  # may be re-applied as above
        checks, sets = [], []
        wrappers = self._wrappers
        for path, module in modules:
            d = module.__dict__
            prior = d.get("forward", _MISSING)
            plain = plain and prior is _MISSING
            cached = wrappers.get(id(module))
            if cached is not None:
                if prior is cached[3]:
                    plain = False
                    continue  # listed twice (aliases): already patched by this call
                if (not sources and cached[0] is module and cached[2] == path
                        and cached[1] is (type(module).forward if prior is _MISSING else prior)):
                    d["forward"] = cached[3]  # the common case: the wrapper made last time
                    patched.append((module, prior))
                    if plain:
                        checks.append((d, module, type(module), cached[1]))
                        sets.append((d, cached[3]))
                    continue
            current = type(module).forward if prior is _MISSING else prior
            source = sources.get(module) if sources else None
            if source is not None:
                current = source
            cached = wrappers.get(id(module))
            if cached is None or cached[0] is not module or cached[1] is not current or cached[2] != path:
                forward = module.forward if source is None else MethodType(source, module)
                cached = (module, current, path, self._forward(path, forward))
                wrappers[id(module)] = cached
            d["forward"] = cached[3]
            patched.append((module, prior))
            if plain:
                checks.append((d, module, type(module), cached[1]))
                sets.append((d, cached[3]))
        if plain:
            self._repatch["last"] = (modules, checks, sets, tuple(patched))

    def forget_wrappers(self) -> Callable[[], None]:
        """A callable that drops the cached wrappers (which refer back to this interleaver) without
        holding the interleaver itself: a model's finalizer calls it, so that the interleaver goes
        with the model by reference counting alone."""
        wrappers, repatch = self._wrappers, self._repatch

        def forget() -> None:
            wrappers.clear()
            repatch.clear()

        return forget

    def unpatch(self) -> None:
        for module, prior in reversed(self._patched):
            if prior is _MISSING:
                module.__dict__.pop("forward", None)
            else:
                module.__dict__["forward"] = prior
        self._patched.clear()

    def _forward(self, path: str, original):
        in_key = path + ".input"
        out_key = path + ".output"
        handle = self.handle
        skips = self._skips
        interleaver = self

        def nnsight_forward(*args, **kwargs):
            if not interleaver.active:
                return original(*args, **kwargs)
            mediators = interleaver.mediators
            if len(mediators) == 1 and mediators[0].event[1] != in_key and not interleaver.caches:
                counts = interleaver.counts  # = handle(in_key, ...) when nobody waits for the inputs
                counts[in_key] = counts.get(in_key, 0) + 1
            else:
                args, kwargs = handle(in_key, (args, kwargs))
            skipped = skips.pop(in_key, None) if skips else None
            if skipped is None:
                output = original(*args, **kwargs)
            else:
                output = _combine_skips(skipped, interleaver.batcher.total)
            return handle(out_key, output)

        nnsight_forward.__nnsight_original__ = original
        # inspect.signature follows __wrapped__: callers that read the forward's parameters (HF
        # generate decides on position_ids, attention_mask and logits_to_keep that way) see the
        # module's own signature, not (*args, **kwargs)
        nnsight_forward.__wrapped__ = original
        return nnsight_forward

    # -------------------------------------------------------------- lifecycle

    def start(self, mediators: List[Mediator], total: int) -> None:
        """Begin an execution: every mediator runs up to its first request."""
        self.mediators = mediators
        self.counts = {}
        self._skips.clear()  # cleared, not replaced: cached forward wrappers hold this dict
        self.batcher.total = total
        self.active = True
        for mediator in mediators:
            mediator.start(self)
            if mediator.event[0] == events.EXCEPTION:  # failed before the model even started
                raise mediator.event[3]

    def finish(self) -> None:
        """After the model returned: fail requests that can no longer be met."""
        for mediator in self.mediators:
            mediator.finish()

    def stop(self) -> None:
        """Tear down: unwind unfinished mediators and restore the model."""
        self.active = False
        for mediator in self.mediators:
            if not mediator.done:
                mediator.cancel()
        self.mediators = []
        self.caches = []
        self.released.clear()  # mediators a barrier released (runtime/mediator.py)
        self.batcher.current = None
        self.unpatch()


def original_forward(module: torch.nn.Module):
    """The module's forward without interleaving (for ad-hoc calls inside a trace)."""
    forward = module.forward
    return getattr(forward, "__nnsight_original__", forward)


def current_interleaver() -> Optional[Interleaver]:
    from .mediator import current_mediator

    mediator = current_mediator()
    return mediator.interleaver if mediator is not None else None
