"""What an invoke's body sees: the trace body's names as they were when its ``with`` was reached.

An invoke's body runs later than the trace body that declares it (during the model's forward
pass). Names the trace body binds outside its invokes (a loop variable, a prompt) must still have,
in each invoke, the value they had when that invoke's ``with`` was reached, as plain Python
would give them: those values are kept per invoke (:func:`own_values`) and swapped into the shared
namespace while that invoke runs (``Mediator.bindings``). Names the invokes set themselves stay
shared between invokes (``CONFIG.APP.CROSS_INVOKER``).
"""
from typing import Any, Dict, Tuple

from runtime import claims

def _own_names(compiled, unit_id: int) -> Tuple[str, ...]:
    """Names the parent body of invoke ``unit_id`` binds that no other with-body in it binds.

    A name another invoke sets is shared between invokes (it flows from one to the next); the
    invoke's own rebinding of a name is written through (see ``Mediator._switch``).
    """
    key = ("own_names", unit_id)
    hit = compiled.memo.get(key)
    if hit is not None:
        return hit
    parent = compiled.program.units[unit_id].parent
    mine = set(compiled.descendants(unit_id, include_self=True))
    others = set()
    for uid in compiled.descendants(parent):
        if uid not in mine:
            others.update(compiled.program.units[uid].assigned)
    names = tuple(n for n in compiled.program.units[parent].assigned if n not in others)
    compiled.memo[key] = names
    return names


def own_values(frame, compiled, unit_id: int) -> Dict[str, Any]:
    """The values, now, of the names invoke ``unit_id`` keeps as its own (see :func:`_own_names`)."""
    names = _own_names(compiled, unit_id)
    if not names:
        return {}
    scope = frame.f_locals
    return {name: scope[name] for name in names if name in scope}


def cross_invoke_hint(error: NameError, codes, isolated: bool) -> None:
    """Explain a NameError for a name another invoke sets (it runs later, or not shared).

    ``codes``: the code objects of the trace's mediators, in invoke order.
    """
    name = getattr(error, "name", None)
    if not name or getattr(error, "__nnsight_hinted__", False):
        return
    raised_in = set()
    tb = error.__traceback__
    while tb is not None:
        raised_in.add(tb.tb_frame.f_code)
        tb = tb.tb_next
    setters = []
    for code in dict.fromkeys(codes):
        built = claims.unit_for_code(code)
        if built is None or name not in built.unit.assigned:
            continue
        if code in raised_in and codes.count(code) == 1:
            continue  # the failing invoke sets it itself, later: an ordinary NameError
        setters.append(built.unit)
    if not setters:
        return
    where = ", ".join(f"line {unit.header[0]}" for unit in setters)
    if isolated:
        hint = (f"`{name}` is set in another invoke (the one at {where}), and invokes don't share "
                f"variables because CONFIG.APP.CROSS_INVOKER is False. Set it to True to share them.")
    else:
        hint = (f"`{name}` is set in another invoke (the one at {where}), but not yet when this "
                f"line ran: invokes take turns, each running until it waits for a module's value, so "
                f"a value another invoke takes from a module exists only once the model has run that "
                f"module. Synchronize the invokes with a barrier: `barrier = tracer.barrier(2)` "
                f"before them, and `barrier()` in both, after the line that sets `{name}` and before "
                f"the line that uses it.")
    error.args = (f"name {name!r} is not defined. {hint}",)
    error.__nnsight_hinted__ = True
