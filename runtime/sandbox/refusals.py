"""What the untrusted tier refuses before a job runs, decided from the program's IR alone.

Values cross the sandbox boundary as data, so a gradient session (``with loss.backward():``),
which runs the hosted model's backward pass, cannot work there: the job's autograd graph lives
in the sandbox child, the model's in the model process. The frontend marks the unit of such a
with-block with :data:`~compiler.ir.FACT_BACKWARD`; a job whose program has one is refused here,
in the model process, before its sandbox child is started: none of its code runs (no ``print``,
no save) and the model is not called. The error names the with-header's file and line.

This is the early, clear refusal, not the boundary itself. What the fact cannot show -- a
program whose producer did not look for it (IR version 2: ``Program.unknown_facts``),
hand-written IR without it, ``backward()`` called by library code -- still meets the boundary's
own check (:mod:`.values`): a value that requires grad never goes back into the model process,
and the job fails at the first such crossing.
"""
from typing import Any, Dict, List, Optional

from compiler.ir import FACT_BACKWARD, FACT_LOCAL, CodeUnit, Program
from compiler.ir.limits import DecodeLimits
from compiler.ir.request import decode_request
from runtime.accept import admit

MAX_QUOTED_CHARS = 200  # of the user's with-header line in the message

HINT = ("run this trace with an API key of the trusted tier (the server's operator sets it: `nnsight-server keys "
        "set KEY_ID --tier trusted`; a server started with `--sandbox always` sandboxes every key), or run it "
        "locally (remote=False); here, gradients of your own computations on saved values (a plain "
        "`loss.backward()` on detached activations) work")


class UntrustedTierRefusal(Exception):
    """A job asks for what the untrusted tier cannot do; it is refused before any of it runs."""


def refusal(program: Program) -> Optional[Dict[str, Any]]:
    """The job error (as :func:`runtime.server.runner.describe` gives it) refusing ``program`` in the
    untrusted tier, or None when its IR shows nothing this tier refuses."""
    sessions = [u for u in program.units if FACT_BACKWARD in u.facts and not _on_the_client(program, u)]
    if not sessions:
        return None
    first = sessions[0]
    file, line = first.loc.file, first.header[0]
    text = _header_line(program, first)
    quoted = " `%s`" % _short(text.strip()) if text else ""
    more = "" if len(sessions) == 1 else " (and %d more)" % (len(sessions) - 1)
    message = ("gradients cannot flow through the hosted model in the untrusted tier: the gradient session%s at "
               "%s:%d%s runs the hosted model's backward pass; the job was refused before it ran"
               % (quoted, file, line, more))
    cls = UntrustedTierRefusal
    return {"type": "%s.%s" % (cls.__module__, cls.__qualname__), "message": message, "hint": HINT,
            "frames": [[file, line, "<module>", text]]}


def refusal_of_request(payload: bytes, limits: Optional[DecodeLimits] = None) -> Optional[Dict[str, Any]]:
    """:func:`refusal` for request bytes. Bytes that do not decode are not refused here: the
    sandbox child decodes them again and reports why, as for any job."""
    try:
        if limits is None:  # the request the server admitted when it arrived: a lookup (runtime.accept)
            program = admit(payload).program
        else:
            program = decode_request(payload, limits=limits).program
    except Exception:  # noqa: BLE001 - the child's accept path gives the real error
        return None
    return refusal(program)


def _on_the_client(program: Program, unit: CodeUnit) -> bool:
    """Is ``unit`` inside a ``tracer.local()`` block? (Its body runs on the client, with values that
    crossed as plain data: its gradients never reach the hosted model.)"""
    seen = set()
    parent = unit.parent
    while parent is not None and 0 <= parent < len(program.units) and parent not in seen:
        seen.add(parent)
        if FACT_LOCAL in program.units[parent].facts:
            return True
        parent = program.units[parent].parent
    return False


def _header_line(program: Program, unit: CodeUnit) -> str:
    """The first line of the with-header that opens ``unit``, from its parent's source ("" if absent)."""
    parent = program.units[unit.parent] if unit.parent is not None and 0 <= unit.parent < len(program.units) else None
    if parent is None:
        return ""
    lines: List[str] = parent.source.splitlines()
    index = unit.header[0] - parent.loc.line
    return lines[index] if 0 <= index < len(lines) else ""


def _short(text: str) -> str:
    return text if len(text) <= MAX_QUOTED_CHARS else text[:MAX_QUOTED_CHARS - 3] + "..."
