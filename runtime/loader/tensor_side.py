"""The tensor side of the hosted-memory check: a torch function mode active while request code runs.

The guard checks aliases of the hosted model's memory where request code reads a callable
(:mod:`runtime.loader.hosted_memory`), which misses a numpy class the request reaches without an
attribute read (``type(np.float32(1.0))(w.detach())``) and any server function that converts a tensor
for it. Every such route ends in a few tensor methods -- numpy converts a tensor through
``Tensor.__array__`` and DLPack through ``Tensor.__dlpack__``, ``copy.copy`` shares the storage through
``untyped_storage()`` -- and torch hands each of those calls to the active ``__torch_function__`` modes
first, whoever calls them (numpy's C code included). :class:`HostedMemoryMode` refuses them for a
tensor over the hosted model's memory, however the class or function was reached.

A mode puts a Python call on every torch operation (+1.3-1.5 ms on a tiny GPT-2 forward), so it is on
only while the request's own code runs: pushed for the whole run of a request (:func:`guarding`), taken
off while the model runs (:func:`current`, in the interleaving tracer), and put back by each mediator's
worker -- the request's intervention code -- while it runs (:meth:`TensorSide.enter` when the model hands
over to it, :meth:`TensorSide.leave` when it hands back: greenlets share the thread's mode stack), and by
the prologue the rewrite gives every function of the request (``Guard.request_code``): the model's
forward may call request code (a tensor subclass's ``__torch_function__``). A plain local trace never
has one.

The mode sits below any mode the request pushes itself (a request's ``__torch_function__`` handler runs
with the modes below it active, so it cannot call numpy behind the check), stays on while the request
has modes of its own on the stack (their handlers are request code the model's every operation calls),
and every switch back checks that it is still there: request code that popped it fails the job (the
public ways to do so are refused: ``torch.device.__exit__``, ``TorchFunctionMode.__exit__``,
``contextlib.ExitStack.push``, a mode class of the request's with its own ``__enter__``/``__exit__``).
The stack functions used are torch's own (``torch._C``), as the integrity check's are.
"""
import contextlib
import sys
import threading
from typing import Any, Iterator, Optional

from .errors import ServerRefusal
from .hosted_memory import HostedMemory


def _aliasing_functions(torch: Any) -> frozenset:
    """What torch passes a mode for the tensor methods that alias a tensor's memory (a property's getter
    comes as its ``__get__``)."""
    t = torch.Tensor
    return frozenset((t.__array__, t.numpy, t.__dlpack__, t.untyped_storage, t.storage, t.share_memory_,
                      t.__reduce_ex__, t.data.__get__, t.__cuda_array_interface__.__get__))


_HOW = {"__array__": "numpy's conversion (`__array__`)", "numpy": "`.numpy()`", "__dlpack__": "DLPack (`__dlpack__`)",
        "untyped_storage": "`.untyped_storage()`", "storage": "`.storage()`", "share_memory_": "`.share_memory_()`",
        "__reduce_ex__": "`__reduce_ex__` (copy, pickle)", "__get__": "`.data`"}


def _mode_class() -> type:
    from torch.overrides import TorchFunctionMode

    class HostedMemoryMode(TorchFunctionMode):
        """Refuses the aliasing tensor methods (:func:`_aliasing_functions`) on hosted memory."""

        def __init__(self, memory: HostedMemory, aliasing: frozenset) -> None:
            super().__init__()
            self.memory = memory
            self.aliasing = aliasing
            self.handling = 0  # >0 while it runs an operation: torch has it off the stack meanwhile

        def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
            if func in self.aliasing and args:
                found = self.memory.hosted(args[0])
                if found is not None:
                    name = getattr(func, "__name__", "")
                    from .guard import refuse

                    raise refuse("NN404", "%s of a tensor whose memory is the hosted model's (%r) is not available "
                                          "to a request, however the function or class that asks for it was "
                                          "reached: %s" % (_HOW.get(name, "`%s`" % name), found, _FIX))
            self.handling += 1
            try:
                return func(*args, **(kwargs or {}))
            finally:
                self.handling -= 1

    return HostedMemoryMode


_FIX = ("the hosted model is shared by every request, and a write through such an alias would change it unseen. "
        "Work on a copy (`w.detach().clone()`, then `.numpy()` or numpy on that), or use torch operations, which "
        "read the weights without aliasing them")
_CLASS: list = []  # the mode class, made at the first guarded request (torch is imported by then)
_CLASS_LOCK = threading.Lock()


class TensorSide:
    """One request's mode and where it sits on the thread's torch function mode stack."""

    __slots__ = ("mode", "base", "removed")

    def __init__(self, mode: Any, base: int) -> None:
        self.mode = mode
        self.base = base  # its index: the modes below are the server's, those above the request's
        self.removed = False  # the request took it off once: the job fails at the end, whatever it caught

    def _position(self, c: Any) -> int:
        for i in range(self.base, c._len_torch_function_stack()):
            if c._get_function_stack_at(i) is self.mode:
                return i
        return -1

    def enter(self) -> None:
        """Have the mode on, under the modes the request pushed since (a worker's switch in)."""
        if self.mode.handling:  # (request code the operation calls: torch puts the mode back after it)
            return
        c = sys.modules["torch"]._C
        depth = c._len_torch_function_stack()
        if depth == self.base:  # (the usual case at a switch)
            c._push_on_torch_function_stack(self.mode)
            return
        if depth == self.base + 1 and c._get_function_stack_at(self.base) is self.mode:  # (a function call)
            return
        if self._position(c) >= 0:
            return  # kept on under the request's own modes (see leave)
        above = [c._pop_torch_function_stack() for _ in range(depth - self.base)]
        c._push_on_torch_function_stack(self.mode)
        for mode in reversed(above):
            c._push_on_torch_function_stack(mode)

    def leave(self, final: bool = False) -> None:
        """Have the mode off (a worker's switch back), keeping the request's modes above it; raises
        :class:`ServerRefusal` if request code removed it meanwhile.

        While the request has modes of its own on the stack, the mode stays on under them (unless
        ``final``): their handlers are request code, which the model's every operation calls, and they
        must not run unchecked (every operation goes through Python for them anyway).
        """
        if self.mode.handling and not final:  # (off the stack while it runs an operation; back after it)
            return
        c = sys.modules["torch"]._C
        depth = c._len_torch_function_stack()
        if depth == self.base + 1 and c._get_function_stack_at(self.base) is self.mode:  # (the usual case)
            c._pop_torch_function_stack()
            return
        position = self._position(c)
        if position < 0:  # back on at its place (request code may catch the error and go on), then refused
            self.removed = True
            self.enter()
            if final:
                self.leave(final=True)
            raise removed_error()
        if not final and depth > position + 1:
            return
        above = [c._pop_torch_function_stack() for _ in range(depth - position - 1)]
        c._pop_torch_function_stack()
        for mode in reversed(above):
            c._push_on_torch_function_stack(mode)


def removed_error() -> ServerRefusal:
    return ServerRefusal("NN404 the request removed the server's check of the hosted model's memory from torch's "
                         "mode stack (an `__exit__` of a torch function mode or device that it had not entered): "
                         "the job is stopped. Enter and exit torch modes and devices with `with`", code="NN404")


def check_class(cls: type) -> None:
    """A request's torch function mode keeps torch's ``__enter__`` and ``__exit__``: one that pops without
    having pushed would take the server's mode off the stack (a ``with`` calls them past the guard)."""
    overrides = sys.modules.get("torch.overrides")
    base = getattr(overrides, "TorchFunctionMode", None)
    if base is None or not issubclass(cls, base):
        return
    for c in type.__dict__["__mro__"].__get__(cls):
        if c is base:
            return
        names = type.__dict__["__dict__"].__get__(c)
        for name in ("__enter__", "__exit__"):
            if name in names:
                from .guard import refuse

                raise refuse("NN404", "torch function mode %r defines %r, which is not available on the server: "
                                      "the server keeps its own checks on torch's mode stack, and a mode that "
                                      "pops what it did not push would remove them. Keep torch's `__enter__` and "
                                      "`__exit__` (use `with YourMode():`)" % (cls.__qualname__, name))


def _side_for(memory: Optional[HostedMemory]) -> Optional[TensorSide]:
    torch = sys.modules.get("torch")
    if memory is None or torch is None or not memory.names():  # (a model without weights: nothing to check)
        return None
    if not _CLASS:
        with _CLASS_LOCK:
            if not _CLASS:
                _CLASS.append(_mode_class())
    return TensorSide(_CLASS[0](memory, _aliasing_functions(torch)), torch._C._len_torch_function_stack())


@contextlib.contextmanager
def guarding(memory: Optional[HostedMemory]) -> Iterator[None]:
    """Run a request's code with the mode active (nothing at all without hosted memory to guard)."""
    side = _side_for(memory)
    if side is None:
        yield
        return
    side.enter()
    memory.side = side  # (request code that server code calls switches it on: Guard.request_code)
    try:
        yield
    finally:
        memory.side = None
        side.leave(final=True)
        if side.removed:  # (even if the request caught the refusal)
            raise removed_error()


def current() -> Optional[TensorSide]:
    """The side whose mode is active on this thread now, if any: the interleaver takes it off while the
    model runs, and has the mediators' workers put it back while they run (a plain local trace: one list
    check in a process that never served a guarded request, one C call in one that did)."""
    if not _CLASS:  # (no guarded request ever ran in this process)
        return None
    c = sys.modules["torch"]._C
    depth = c._len_torch_function_stack()
    if not depth:
        return None
    cls = _CLASS[0]
    for i in range(depth - 1, -1, -1):
        mode = c._get_function_stack_at(i)
        if type(mode) is cls:
            return TensorSide(mode, i)
    return None
