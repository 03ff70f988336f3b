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
from typing import Any, Dict, List, Optional

from compiler.ir import FACT_LOCAL
from compiler.ir.limits import DecodeLimits
from compiler.ir.request import decode_result
from compiler.ir.values import decode_value
from runtime import claims, saves
from runtime.accept import prepare_namespace
from runtime.builder import namespace
from runtime.local_blocks import LOCAL_BLOCKS, LocalBlockError, encode_reply, frame_reply


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


class ClientLocalBlocks:
    """The client's side: answers the server's LOCAL messages by running the blocks here.

    ``compiled`` is the client's own program (it still has the blocks' code),
    ``frame`` the user's frame (the block's free names come from it), ``resolve`` and
    ``may_build`` the request's reply hooks (values from the server decode as results do).
    The first error a block raises is kept in :attr:`failure`: the trace re-raises it.
    """

    def __init__(self, compiled: Any, frame: Any, resolve: Any, may_build: Any,
                 limits: Optional[DecodeLimits] = None) -> None:
        self.compiled = compiled
        self.frame = frame
        self.resolve = resolve
        self.may_build = may_build
        self.limits = limits
        self.failure: Optional[BaseException] = None

    def answer(self, block: int, message: bytes) -> bytes:
        """LOCAL bytes in, LOCAL_RESULT body out (the block's error is sent, and kept)."""
        try:
            values, uid = self._decode(block, message)
            changed, saved = self._run(uid, values)
            return encode_reply(block, changed, saved)
        except Exception as error:  # noqa: BLE001 - the user's error: reported to the server, raised here
            if self.failure is None:
                self.failure = error
            return encode_reply(block, {}, [], error=error)

    def reply(self, block: int, message: bytes) -> bytes:
        """:meth:`answer`, framed as the LOCAL_RESULT message of the events WebSocket."""
        return frame_reply(block, self.answer(block, message))

    def _decode(self, block: int, message: bytes):
        local = decode_value(decode_result(message, limits=self.limits), resolve=self.resolve,
                             may_build=self.may_build, limits=self.limits)
        units = self.compiled.program.units
        uid = local.get("unit") if isinstance(local, dict) else None
        if (not isinstance(uid, int) or not 0 < uid < len(units) or FACT_LOCAL not in units[uid].facts
                or local.get("block") != block or not isinstance(local.get("values"), dict)):
            raise LocalBlockError("the server's LOCAL message does not name a local block of this trace")
        reads = set(units[uid].reads)
        values = {k: _detached(v) for k, v in local["values"].items() if k in reads}
        return values, uid

    def _run(self, uid: int, values: Dict[str, Any]):
        unit = self.compiled.program.units[uid]
        f_locals, f_globals = self.frame.f_locals, self.frame.f_globals
        ns = prepare_namespace(namespace(self.compiled.free_names, f_locals, f_globals, values))
        versions = {name: _version(value) for name, value in values.items()}
        exec(self.compiled.units[uid].code, ns)
        changed: Dict[str, Any] = {}
        for name in unit.assigned:
            if name in ns:
                changed[name] = ns[name]
        for name, before in versions.items():  # tensors the block edited in place
            if name not in changed and before is not None and _version(ns.get(name)) != before:
                changed[name] = ns[name]
        saved: List[str] = [name for name, value in changed.items() if saves.is_saved(value)]
        return changed, saved


def _detached(value: Any) -> Any:
    """A server tensor as a plain one here: no gradient crosses the wire, and the block may edit it."""
    if type(value).__module__.startswith("torch") and getattr(value, "requires_grad", False) is True:
        return value.detach()
    return value


def _version(value: Any) -> Optional[int]:
    """A tensor's in-place edit counter (None for anything else)."""
    version = getattr(value, "_version", None)
    return version if isinstance(version, int) and type(value).__module__.startswith("torch") else None
