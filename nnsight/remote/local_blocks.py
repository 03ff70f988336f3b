"""The client's side of ``with tracer.local():`` blocks, for either client (torch or not).

The server stops a remote job at a local block and sends the values the block
reads (a LOCAL message, :mod:`runtime.local_blocks`); :class:`ClientLocalBlocks`
decodes them with the request's reply hooks, runs the block's code here -- with
the caller's own functions, modules and data -- and answers with what the block
assigned, the read values it edited in place and the names it saved.

Without torch (``nnsight.RemoteModel`` on a torch-free client) the block sees
tensors as the result decoder gives them (:mod:`nnsight.remote.arrays`): numpy
arrays when numpy is installed, else nested lists of Python numbers. An
in-place edit of such a value (``hidden[:, -1] = 0`` on an array, or on a list)
is found by comparing it with a copy taken before the block, and is sent back
like a tensor's; the server copies it into its tensor.
"""
import copy
from typing import Any, Callable, Dict, List, Optional

from compiler.ir import FACT_LOCAL
from compiler.ir.limits import DecodeLimits
from compiler.ir.request import decode_result
from compiler.ir.values import decode_value
from runtime import saves
from runtime.accept import prepare_namespace
from runtime.builder import namespace
from runtime.local_blocks import LocalBlockError, encode_reply, frame_reply


class ClientLocalBlocks:
    """The client's side: answers the server's LOCAL messages by running the blocks here.

    ``compiled`` is the client's own program (it still has the blocks' code),
    ``frame`` the user's frame (the block's free names come from it), ``resolve`` and
    ``may_build`` the request's reply hooks (values from the server decode as results do);
    ``rewrite`` turns the message's value tree into one this client can decode (the
    torch-free client's :func:`~nnsight.remote.arrays.tensors_as_arrays`).
    The first error a block raises is kept in :attr:`failure`: the trace re-raises it.
    """

    def __init__(self, compiled: Any, frame: Any, resolve: Any, may_build: Any,
                 limits: Optional[DecodeLimits] = None, rewrite: Optional[Callable[[Any], Any]] = None) -> None:
        self.compiled = compiled
        self.frame = frame
        self.resolve = resolve
        self.may_build = may_build
        self.limits = limits
        self.rewrite = rewrite
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
        tree = decode_result(message, limits=self.limits)
        if self.rewrite is not None:
            tree = self.rewrite(tree)
        local = decode_value(tree, resolve=self.resolve, may_build=self.may_build, limits=self.limits)
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
        copies = {name: _copy(value) for name, value in values.items()}
        exec(self.compiled.units[uid].code, ns)
        changed: Dict[str, Any] = {}
        for name in unit.assigned:
            if name in ns:
                changed[name] = ns[name]
        for name, value in values.items():  # read values the block edited in place
            if name in changed or ns.get(name) is not value:
                continue
            before = versions[name]
            if (before is not None and _version(value) != before) or \
                    (copies[name] is not None and not _equal(copies[name], value)):
                changed[name] = value
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


def _copy(value: Any) -> Any:
    """A copy of a numpy array or a list (how a torch-free client sees a tensor), else None."""
    if type(value) is list:
        return copy.deepcopy(value)
    if type(value).__module__ == "numpy" and type(value).__name__ == "ndarray":
        return value.copy()
    return None


def _equal(before: Any, after: Any) -> bool:
    if type(before) is list:
        return before == after
    import numpy

    if before.dtype != after.dtype or before.shape != after.shape:
        return False
    try:
        return bool(numpy.array_equal(before, after, equal_nan=True))
    except TypeError:  # a dtype without NaN (strings...)
        return bool(numpy.array_equal(before, after))
