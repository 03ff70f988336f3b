"""``with tracer.invoke(input):`` — one batch entry and its intervention code."""
import sys
from typing import Any

from runtime import claims, skip
from runtime.builder import namespace
from runtime.mediator import current_mediator

from .compile import compile_call_site
from .invoke_scope import own_values
from .tracebacks import clean


class Invoker:
    """Adds an invoke to its trace: inputs (maybe none) plus a body unit run as a mediator.

    The body's code is the IR unit of the ``with`` block; the names the trace body had bound when
    the ``with`` was reached keep those values for this invoke (see ``invoke_scope``). An invoke
    opened in a helper function called from the trace body is compiled at that call site and runs
    with the helper's variables.
    """

    def __init__(self, tracer, args: tuple, kwargs: dict) -> None:
        self.tracer = tracer
        self.args = args
        self.kwargs = kwargs
        self._code = None
        self._bindings = None
        self._namespace = None
        self._frame = None
        self._armed = None

    def __enter__(self) -> "Invoker":
        if current_mediator() is not None:
            raise ValueError(
                "Cannot invoke during an active model execution / interleaving. Invokes can't be "
                "nested, and a trace given an input already is one invoke: use `with "
                "model.trace() as tracer:` with sequential `with tracer.invoke(...):` blocks.")
        frame = sys._getframe(1)
        claimed = claims.claim(frame)
        if claimed is None:
            return self._enter_helper(frame)
        compiled, unit_id = claimed
        self._code = compiled.units[unit_id].code
        if compiled.program.units[unit_id].parent is not None:
            self._bindings = own_values(frame, compiled, unit_id) or None
        return self

    def _enter_helper(self, frame) -> "Invoker":
        """``with tracer.invoke(...)`` in a function the trace body called: compile it here."""
        if getattr(self.tracer, "_frame", None) is None:
            raise RuntimeError(
                "`tracer.invoke(...)` must be used as a with-statement inside a trace block (or in a "
                "function called from one, while the trace runs).")
        try:
            compiled = compile_call_site(frame)
        except Exception as error:
            raise clean(error)
        self._code = compiled.units[0].code
        self._namespace = namespace(compiled.free_names, frame.f_locals, frame.f_globals)
        self._frame = frame
        self._armed = skip.arm(frame)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._armed is not None:  # a helper's invoke: its body was skipped, to run as a mediator
            skip.disarm(self._frame, self._armed)
            self._armed = self._frame = None
            if exc_type is not skip.SkipBody:
                return False
            self.tracer._add_invoke(self.args, self.kwargs, self._code, namespace=self._namespace)
            return True
        if exc_type is None:
            self.tracer._add_invoke(self.args, self.kwargs, self._code, bindings=self._bindings)
        return False


def body_has_invokes(compiled, unit_id: int) -> bool:
    """Does unit ``unit_id`` directly contain ``with ....invoke(...)`` blocks? (the IR's ``invoke`` fact)

    A trace given an input whose body also opens invokes (``with model.generate("Hello") as
    tracer: with tracer.invoke(): ...``) uses the input as one more batch entry instead of running
    its body as the implicit invoke.
    """
    return unit_id in compiled.invoke_parents
