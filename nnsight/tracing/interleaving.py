"""``with model.trace(...)``: run the model once, interleaved with the body's interventions."""
from typing import Any, List, Tuple

from runtime import saves
from runtime.errors import EarlyStopException
from runtime.interleaver import RESULT
from runtime.loader.tensor_side import current as active_side
from runtime.mediator import Mediator, current_mediator

from ..config import CONFIG
from .barrier import BarrierMixin
from .base import Tracer
from .cache import CacheMixin
from .hookplan import modules_to_patch
from .invoke_scope import cross_invoke_hint
from .invoker import Invoker, body_has_invokes
from .iteration import IterationMixin, request_at


class _Invoke(tuple):
    """``(args, kwargs, code)`` of an invoke, with its ``bindings`` and ``namespace`` attributes."""


class InterleavingTracer(IterationMixin, BarrierMixin, CacheMixin, Tracer):
    """Trace of one model call. Inputs given to the trace make the body an implicit invoke."""

    def __init__(self, model, *args, **kwargs) -> None:
        remote = kwargs.pop("remote", None)
        blocking = kwargs.pop("blocking", True)
        super().__init__(model)
        if remote is not None:
            from .remote import check_remote

            self._remote = check_remote(remote)
            self._blocking = bool(blocking)
        self._args = args
        self._kwargs = kwargs
        self._invokes: List[Tuple[tuple, dict, Any]] = []
        self._output = None

    # ------------------------------------------------------------ user API

    def invoke(self, *args, **kwargs) -> Invoker:
        """A batch entry: ``with tracer.invoke("Hello"):`` (or no input: the whole batch)."""
        return Invoker(self, args, kwargs)

    @property
    def result(self) -> Any:
        """The traced call's return value (inside the trace, wait for it)."""
        mediator = current_mediator()
        if mediator is not None:
            return request_at(mediator, RESULT, 0)  # one result per run, whatever the step cursor
        return self._output

    def stop(self) -> None:
        """End the model's execution here."""
        raise EarlyStopException()

    # ------------------------------------------------------------ execution

    def _add_invoke(self, args: tuple, kwargs: dict, code, bindings=None, namespace=None) -> None:
        """One batch entry. ``bindings``: the invoke's own values of trace-body names;
        ``namespace``: its own globals (an invoke opened in a helper function)."""
        entry = _Invoke((args, kwargs, code))
        entry.bindings, entry.namespace = bindings, namespace
        self._invokes.append(entry)

    def execute(self, ns) -> None:
        model = self.model
        inputs, config = model._split_inputs(self._args, self._kwargs)
        self._invokes = []
        if inputs is not None and not body_has_invokes(self._compiled, self._unit_id):
            # A body that does nothing (`pass`) needs no intervention: no greenlet, no hooks (~5 us)
            trivial = self._unit_id == 0 and self._compiled.trivial
            self._add_invoke(inputs[0], inputs[1], None if trivial else self._code())
        else:
            if inputs is not None:  # the trace's input is one more batch entry, with no body
                self._add_invoke(inputs[0], inputs[1], None)
            exec(self._code(), ns)
        if self._invokes:
            self._output = self._run(ns, config)

    def run_without_body(self) -> Any:
        """``model.trace(input, trace=False)`` (nnsight 0.8): run the model on the trace's input
        with no interventions but the model's edits, and return its output."""
        inputs, config = self.model._split_inputs(self._args, self._kwargs)
        if inputs is None:
            raise ValueError(
                "`model.trace(..., trace=False)` runs the model on its input and returns the output, "
                "so it needs an input: `model.trace(prompt, trace=False)`.")
        self._invokes = []
        self._add_invoke(inputs[0], inputs[1], None)
        self._output = self._run({}, config)
        return self._output

    def _run(self, ns, config: dict) -> Any:
        model = self.model
        mediators = []
        batched = None
        total = 0
        # CONFIG.APP.CROSS_INVOKER = False: each invoke gets its own copy of the namespace.
        isolated = not CONFIG.APP.CROSS_INVOKER and sum(c is not None for _, _, c in self._invokes) > 1
        for entry in self._invokes:
            args, kwargs, code = entry
            if args or kwargs:
                p_args, p_kwargs, size = model._prepare_input(*args, **kwargs)
            else:
                size = 0
            if size == 0:
                group = None
            else:
                group = (total, size)
                total += size
                batched = (p_args, p_kwargs) if batched is None else model._batch(batched, *p_args, **p_kwargs)
            if code is not None:
                own_ns = getattr(entry, "namespace", None)
                if own_ns is None:
                    own_ns = dict(ns) if isolated else ns
                mediators.append(Mediator(code, own_ns, group, bindings=getattr(entry, "bindings", None)))
        edits = getattr(model, "_edit_mediators", None)
        if edits is not None:  # persistent interventions (model.edit()) come first, whole batch
            mediators[:0] = edits(ns)
        if batched is None:
            raise ValueError(
                "The trace has no input: empty invokes need at least one invoke with an input. "
                "Pass the input to `model.trace(input)` or to `tracer.invoke(input)`.")
        try:
            output = self._interleave(mediators, total, batched[0], {**batched[1], **config})
        except NameError as error:  # a name another invoke sets: say how to share it
            cross_invoke_hint(error, [mediator.code for mediator in mediators], isolated)
            raise
        if isolated:  # saved values still come back to the caller
            for mediator in mediators:
                if mediator.namespace is not ns:
                    ns.update((k, v) for k, v in mediator.namespace.items() if id(v) in saves.SAVES)
        return output

    def _interleave(self, mediators, total: int, args: tuple, kwargs: dict) -> Any:
        model = self.model
        interleaver = model._interleaver
        if interleaver.active:
            raise RuntimeError(
                f"{type(model).__name__} is already running a trace; a trace can't run the same model "
                f"again from inside its interventions (use `model.session()` to run traces one after another).")
        model._ensure_dispatched()
        if mediators:  # (no intervention: no hooks, and the last hook plan stays cached)
            targets = modules_to_patch(model, mediators)
            interleaver.patch(model._patch_list() if targets is None else targets)
        output = None
        running = model.__dict__.get("_running")  # `envoy.iter[...]` / `envoy.all()` (nnsight 0.8)
        if running is not None:
            running.tracer = self
        side = active_side()  # a guarded request's tensor-side check: off for the model, on in its workers
        if side is not None:
            side.leave()
            for mediator in mediators:
                mediator.guard(side)
        try:
            try:
                interleaver.start(mediators, total)
                output = self._call_model(args, kwargs)
                output = interleaver.handle(RESULT, output)
                interleaver.finish()
            except EarlyStopException:
                pass
        finally:
            interleaver.stop()
            if running is not None:
                running.tracer = None
            if side is not None:
                side.enter()
        return output

    def _call_model(self, args: tuple, kwargs: dict) -> Any:
        return self.model._execute(*args, **kwargs)
