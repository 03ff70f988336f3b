"""``with tracer.invoke(input):`` — one batch entry and its intervention code."""
import sys
from typing import Any

from runtime import claims
from runtime.mediator import current_mediator


class Invoker:
    """Adds an invoke to its trace: inputs (maybe none) plus a body unit run as a mediator."""

    def __init__(self, tracer, args: tuple, kwargs: dict) -> None:
        self.tracer = tracer
        self.args = args
        self.kwargs = kwargs
        self._code = None

    def __enter__(self) -> "Invoker":
        if current_mediator() is not None:
            raise ValueError(
                "Cannot invoke during an active model execution / interleaving. Invokes can't be "
                "nested, and a trace given an input already is one invoke: use `with "
                "model.trace() as tracer:` with sequential `with tracer.invoke(...):` blocks.")
        claimed = claims.claim(sys._getframe(1))
        if claimed is None:
            raise RuntimeError("`tracer.invoke(...)` must be used as a with-statement inside a trace block.")
        compiled, unit_id = claimed
        self._code = compiled.units[unit_id].code
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.tracer._add_invoke(self.args, self.kwargs, self._code)
        return False


_has_invokes: dict = {}


def body_has_invokes(compiled, unit_id: int) -> bool:
    """Does unit ``unit_id`` directly contain ``with ....invoke(...)`` blocks? (read from the IR)

    A trace given an input whose body also opens invokes (``with model.generate("Hello") as
    tracer: with tracer.invoke(): ...``) uses the input as one more batch entry (design 0.6,
    "smarter trace vs invoke detection") instead of running its body as the implicit invoke.
    """
    hit = _has_invokes.get((id(compiled), unit_id))
    if hit is not None and hit[0] is compiled:
        return hit[1]
    program = compiled.program
    found = False
    for unit in program.units:
        if unit.parent != unit_id:
            continue
        parent = program.units[unit_id]
        lines = parent.source.splitlines()
        first, last = unit.header
        header = "\n".join(lines[first - parent.loc.line: last - parent.loc.line + 1])
        if ".invoke(" in header:
            found = True
            break
    _has_invokes[(id(compiled), unit_id)] = (compiled, found)
    return found
