"""``with tracer.local():`` -- a block of a remote trace that runs on the client.

Inside ``remote=True`` (or ``remote='local'``) the body of the trace runs on
the server; a local block's body does not. The server reaches the block, stops
the intervention there and sends the values of the names the block reads
(``CodeUnit.reads``); the client runs the block's code -- with its own
functions, modules and data, none of which is sent -- and sends back what the
block assigned, the tensors it edited in place and the names it saved; the
server binds them and continues the forward pass (:mod:`runtime.local_blocks`).

Without ``remote=`` the block is an ordinary part of the trace: its body runs
inline, where it stands.
"""
import sys
from typing import Any

from compiler.ir import FACT_LOCAL
from runtime import claims
from runtime.local_blocks import LOCAL_BLOCKS, LocalBlockError

from ..remote.local_blocks import ClientLocalBlocks  # noqa: F401  (the client's side, torch-free)


class LocalBlock:
    """The context manager ``tracer.local()`` returns."""

    def __init__(self, tracer: Any) -> None:
        self.tracer = tracer
        self._frame = None
        self._unit = None
        self._channel = None

    def __enter__(self) -> "LocalBlock":
        frame = sys._getframe(1)
        channel = frame.f_globals.get(LOCAL_BLOCKS)  # set by the server for the program's code
        if channel is None:  # not a remote run: the body runs inline, in place
            return self
        claimed = claims.claim(frame)
        if claimed is None:
            raise LocalBlockError("tracer.local() must open a `with` block directly inside the trace's body")
        compiled, uid = claimed
        unit = compiled.program.units[uid]
        if FACT_LOCAL not in unit.facts:
            raise LocalBlockError(
                "%s:%d: this `with tracer.local():` block was sent to run on the server: write it as "
                "`with tracer.local():` alone (no other with-items), from an nnsight client that runs local "
                "blocks (this one's version or newer)" % (unit.loc.file, unit.header[0]))
        self._frame, self._unit, self._channel = frame, unit, channel
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        frame, unit, channel = self._frame, self._unit, self._channel
        self._frame = self._unit = self._channel = None
        if exc_type is not None or unit is None:
            return False
        channel.run(unit, frame.f_globals)  # unit code runs with the program's names as globals
        return False
