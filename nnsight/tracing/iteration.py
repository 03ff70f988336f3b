"""Multi-step iteration: ``tracer.iter[...]``, ``tracer.all()``, ``tracer.next()``.

Every module called several times in one execution (once per generated token,
typically) provides ``key.i0``, ``key.i1``, ...; an intervention asks for the
iteration its mediator's cursor (``mediator.iteration``) points at. These
helpers move the cursor.

``for step in tracer.iter[sel]:`` and ``with tracer.iter[sel] [as step]:`` run
their body once per selected step with the cursor on that step. Selections:
``[2]``, ``[1:3]``, ``[::2]``, ``[[0, 2, 4]]``, ``[:]`` (every step; so is
``tracer.all()``).

Unbounded selections (no stop: ``[:]``, ``[1:]``, ``all()``) end

* after the last step, when the number of steps is known (generation:
  ``max_new_tokens``, or ``max_length`` minus the prompt), so the code after
  the loop still runs while the model is on that last step;
* when the model finishes without starting the next step (an early end of
  sequence, or an ordinary trace with no step count). Before each step after
  the first, the loop waits (a STEP event) until the model starts that step —
  the root module's input for that iteration — or returns; it never spins
  or hangs, whatever the body reads.

After a loop the cursor stays on the last step the loop ran (like a Python
loop variable), so ``model.output`` after ``for step in tracer.iter[:]`` is the
output of the last step. Once-per-run values (``tracer.result``,
``model.generator.output``) are read at iteration 0 whatever the cursor.
See docs/features.md for the reasoning.
"""
import sys
import warnings
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from runtime import claims, events
from runtime.mediator import current_mediator

from ..deprecation import NNsightDeprecationWarning

Selector = Union[int, slice, List[int], Tuple[int, ...], range]


def require_mediator(what: str, why: str = "moves an intervention's iteration cursor"):
    mediator = current_mediator()
    if mediator is None:
        raise ValueError(
            f"`{what}` {why}, so it must run inside an invoke: "
            f"in the body of a trace given an input (`with model.generate(prompt, ...) as tracer:`) "
            f"or inside `with tracer.invoke(...):`.")
    return mediator


def request_at(mediator, key: str, iteration: int) -> Any:
    """Request ``key`` at a fixed iteration, whatever the cursor (once-per-run providers)."""
    saved = mediator.iteration
    mediator.iteration = iteration
    try:
        return mediator.request(key)
    finally:
        mediator.iteration = saved


def swap_at(mediator, key: str, iteration: int, value: Any) -> None:
    saved = mediator.iteration
    mediator.iteration = iteration
    try:
        mediator.swap(key, value)
    finally:
        mediator.iteration = saved


# ----------------------------------------------------------------------------- step boundaries


def step_key(model) -> str:
    """The provider that marks the start of a step: the root module's input."""
    return model._input_key


def step_started(mediator, key: str, step: int) -> bool:
    """Wait until the model starts ``step`` (True) or finishes without it (False)."""
    if mediator.interleaver.provided(key, step):
        return True
    saved = mediator.iteration
    mediator.iteration = step
    try:
        return bool(mediator.send(events.STEP, key))
    finally:
        mediator.iteration = saved


def end_steps(interleaver) -> None:
    """The model finished: tell every intervention waiting for a next step that none will come.

    Called on the model side after the traced call returned and before its
    result is provided, so code after an iteration loop can still read
    ``tracer.result`` / ``model.generator.output``.
    """
    if not interleaver.active:
        return
    for mediator in list(interleaver.mediators):
        if not mediator.done and mediator.event[0] == events.STEP:
            mediator._resume(False)


def ensure_root_patched(model) -> None:
    """Make the root module provide its input, the step boundary, even if the hook plan left it out."""
    module = model._module
    forward = module.__dict__.get("forward")
    if forward is None or not hasattr(forward, "__nnsight_original__"):
        model._interleaver.patch([(model.path, module)])


# ----------------------------------------------------------------------------- selections


def _check_index(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"tracer.iter {what} must be an int, got {type(value).__name__}.")
    if value < 0:
        raise ValueError(
            f"tracer.iter {what} can't be negative ({value}): steps are counted from 0 and the "
            f"number of steps isn't known before the model runs.")
    return value


class Steps:
    """The steps ``tracer.iter[selector]`` visits; iterate it or use it as a with-block."""

    def __init__(self, tracer, selector: Selector) -> None:
        if isinstance(selector, range):
            selector = list(selector)
        if isinstance(selector, slice):
            for part in ("start", "stop"):
                v = getattr(selector, part)
                if v is not None:
                    _check_index(v, f"slice {part}")
            if selector.step is not None and (not isinstance(selector.step, int) or selector.step <= 0):
                raise ValueError(f"tracer.iter slice step must be a positive int, got {selector.step!r}.")
        elif isinstance(selector, (list, tuple)):
            selector = sorted({_check_index(v, "index") for v in selector})
        else:
            selector = _check_index(selector, "index")
        self.tracer = tracer
        self.selector = selector
        self._code = None
        self._ns: Optional[Dict[str, Any]] = None
        self._as: Optional[str] = None

    def __repr__(self) -> str:
        return f"tracer.iter[{self.selector!r}]"

    # -------------------------------------------------------------- for-loop form

    def __iter__(self) -> Iterator[int]:
        mediator = require_mediator("tracer.iter[...]` / `tracer.all()")
        selector = self.selector
        if isinstance(selector, int):
            mediator.iteration = selector
            yield selector
            return
        if isinstance(selector, list):
            for i in selector:
                mediator.iteration = i
                yield i
            return
        start = selector.start if selector.start is not None else mediator.iteration
        stride = selector.step or 1
        if selector.stop is not None:
            i = start
            while i < selector.stop:
                mediator.iteration = i
                yield i
                i += stride
            return
        # Unbounded: stop after the known last step, or when the model ends first.
        limit = getattr(self.tracer, "_steps", None)
        key = step_key(self.tracer.model)
        i = start
        while limit is None or i < limit:
            if i > 0 and not step_started(mediator, key, i):
                return
            mediator.iteration = i
            yield i
            i += stride

    # -------------------------------------------------------------- with-block form

    def __enter__(self) -> "Steps":
        frame = sys._getframe(1)
        claimed = claims.claim(frame)
        if claimed is None:
            raise RuntimeError("`with tracer.iter[...]:` must be used inside a trace block.")
        compiled, unit_id = claimed
        self._code = compiled.units[unit_id].code
        self._ns = frame.f_globals
        self._as = _as_name(compiled, unit_id)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            return False
        code, ns, name = self._code, self._ns, self._as
        self._code = self._ns = None
        for step in self:
            if name is not None:
                ns[name] = step
            exec(code, ns)
        return False


class IterationProxy:
    """``tracer.iter``: subscript it to choose steps."""

    __slots__ = ("tracer",)

    def __init__(self, tracer) -> None:
        self.tracer = tracer

    def __getitem__(self, selector: Selector) -> Steps:
        return Steps(self.tracer, selector)


class IterationMixin:
    """``iter`` / ``all`` / ``next`` on tracers that run a model."""

    _steps: Optional[int] = None  # steps of the running execution, when known (generation)

    @property
    def iter(self) -> IterationProxy:
        """``tracer.iter[2]``, ``[1:3]``, ``[::2]``, ``[[0, 2]]``, ``[:]``: steps to run a body on."""
        return IterationProxy(self)

    def all(self) -> Steps:
        """Every step: ``for step in tracer.all():`` (same as ``tracer.iter[:]``)."""
        return Steps(self, slice(None))

    def next(self, step: int = 1):
        """Move this intervention's cursor ``step`` steps ahead."""
        mediator = require_mediator("tracer.next()")
        mediator.iteration += _check_index(step, "next() step")
        return self


def envoy_iter(envoy) -> IterationProxy:
    """``model.iter[...]`` (on the root or any envoy): nnsight 0.8's ``tracer.iter[...]``.

    It acts on the trace running this model (the same steps, the same cursor), with a
    ``NNsightDeprecationWarning`` pointing at the tracer's spelling.
    """
    _warn_model_spelling(f"{_spelled(envoy)}.iter[...]", "tracer.iter[...]")
    return IterationProxy(_running_tracer(envoy))


def envoy_all(envoy) -> Steps:
    """``model.all()`` (on the root or any envoy): nnsight 0.8's ``tracer.all()``."""
    _warn_model_spelling(f"{_spelled(envoy)}.all()", "tracer.all()")
    return Steps(_running_tracer(envoy), slice(None))


def _spelled(envoy) -> str:
    return "model" if envoy.path == "model" else "envoy"


class _NoRunningTracer:
    """Stands in for the tracer when no trace runs this model: the step count is unknown."""

    _steps = None

    def __init__(self, model) -> None:
        self.model = model


def _running_tracer(envoy):
    running = envoy.__dict__.get("_running")
    tracer = running.tracer if running is not None else None
    return tracer if tracer is not None else _NoRunningTracer(envoy)


def _warn_model_spelling(old: str, new: str) -> None:
    frame = sys._getframe(3)  # the user's line (compiled trace code keeps its file and line)
    warnings.warn_explicit(
        f"`{old}` is the nnsight 0.8 spelling; use `{new}` (the tracer of `with model.trace(...) as tracer:`).",
        NNsightDeprecationWarning, frame.f_code.co_filename, frame.f_lineno,
        module=frame.f_globals.get("__name__", "__main__"),
        registry=frame.f_globals.setdefault("__warningregistry__", {}))


# ----------------------------------------------------------------------------- helpers

def _as_name(compiled, unit_id: int) -> Optional[str]:
    """The ``as`` target name of the with-statement that owns nested unit ``unit_id`` (the IR's
    ``CodeUnit.target``; None if absent)."""
    unit = compiled.program.units[unit_id]
    return unit.target if unit.parent is not None else None
