"""``with loss.backward():`` — a separate interleaving session over the backward pass.

Importing nnsight replaces ``torch.Tensor.backward`` with a function that
looks at its caller: when the call is the context expression of a
with-statement it returns a :class:`BackwardsTracer`; anything else runs the
real backward. The tracer's body runs as one mediator of its own
:class:`GradInterleaver` while autograd runs: reading ``t.grad`` registers a
tensor hook on ``t`` (provider ``"<id(t)>.grad"``) and waits for it, writing
``t.grad`` (or editing the read value in place) changes the gradient that
flows on. Gradients arrive in reverse order of the forward pass.

``.grad`` is a property installed on ``torch.Tensor`` only while a backward
tracer runs; it answers with the real gradient outside the tracer's body.
"""
import dis
import functools
import sys
from typing import Any, Dict, Tuple

import torch

from runtime import claims, events, registries
from runtime.interleaver import Interleaver
from runtime.mediator import Mediator, current_mediator

from .base import Tracer

_real_backward = torch.Tensor.backward
_real_grad = torch._C.TensorBase.grad  # the C getset descriptor
_WITH_OPS = frozenset({"BEFORE_WITH", "SETUP_WITH"})


class BackwardsMediator(Mediator):
    """The mediator of a backward tracer's body: it may only ask for gradients."""

    __slots__ = ()
    grad_only = True

    def request(self, key: str) -> Any:
        if not key.endswith(".grad"):
            raise ValueError(
                f"Cannot request `{key}.i{self.iteration}` in a backwards tracer. You can only request "
                f"`.grad`. Please define your Tensors before the Backwards Tracer and interact with "
                f"their gradients within the Backwards Tracer.")
        return self.send(events.VALUE, key)

    def swap(self, key: str, value: Any) -> None:
        if not key.endswith(".grad"):
            raise ValueError(
                f"Cannot set `{key}.i{self.iteration}` in a backwards tracer. You can only set "
                f"`.grad`. Please define your Tensors before the Backwards Tracer and interact with "
                f"their gradients within the Backwards Tracer.")
        self.send(events.SWAP, key, value)


class GradInterleaver(Interleaver):
    """Interleaves a backward pass: providers are tensor hooks, registered on first ``.grad`` use."""

    __slots__ = ("_grad_hooks",)

    def __init__(self) -> None:
        super().__init__()
        self._grad_hooks: Dict[int, Tuple[str, Any]] = {}

    def grad_key(self, tensor: torch.Tensor) -> str:
        """The provider of ``tensor``'s gradient; hooks the tensor the first time."""
        entry = self._grad_hooks.get(id(tensor))
        if entry is None:
            key = f"{id(tensor)}.grad"
            handle = self.handle

            def hook(grad):
                return handle(key, grad)

            handles = [tensor.register_hook(hook)]
            base = tensor._base
            if base is not None and base.requires_grad:
                handles.append(base.register_hook(self._base_hook(key, tensor)))
            entry = (key, handles)
            self._grad_hooks[id(tensor)] = entry
        return entry[0]

    def _base_hook(self, key: str, view: torch.Tensor):
        """A view's gradient, taken from its base's.

        An invoke of a batched trace sees its rows of a module's output as a view,
        and a view that the loss was not computed from gets no gradient of its
        own. Its part of the base's gradient is delivered instead (unless the
        view's own hook already delivered it); edits are written back into it.
        """
        interleaver = self
        view_func = view._view_func

        def hook(grad):
            if interleaver.provided(key, 0):
                return grad
            region = view_func(grad)
            new = interleaver.handle(key, region)
            if new is not region:
                grad = grad.clone()
                view_func(grad).copy_(new)
            return grad

        return hook

    def stop(self) -> None:
        super().stop()
        for _, handles in self._grad_hooks.values():
            for handle in handles:
                handle.remove()
        self._grad_hooks.clear()


# ------------------------------------------------------------------ .grad property

def _grad_mediator():
    mediator = current_mediator()
    if mediator is not None and getattr(mediator, "grad_only", False):
        return mediator
    return None


def _grad_get(tensor: torch.Tensor) -> Any:
    mediator = _grad_mediator()
    if mediator is None:
        return _real_grad.__get__(tensor)
    return mediator.request(mediator.interleaver.grad_key(tensor))


def _grad_set(tensor: torch.Tensor, value: Any) -> None:
    mediator = _grad_mediator()
    if mediator is None:
        _real_grad.__set__(tensor, value)
        return
    mediator.swap(mediator.interleaver.grad_key(tensor), value)


def _grad_del(tensor: torch.Tensor) -> None:
    _real_grad.__delete__(tensor)


_GRAD_PROPERTY = property(_grad_get, _grad_set, _grad_del, doc=_real_grad.__doc__)
_installed = [0]


def _install_grad() -> None:
    if _installed[0] == 0:
        torch.Tensor.grad = _GRAD_PROPERTY
    _installed[0] += 1


def _uninstall_grad() -> None:
    _installed[0] -= 1
    if _installed[0] == 0 and torch.Tensor.__dict__.get("grad") is _GRAD_PROPERTY:
        del torch.Tensor.grad


# ------------------------------------------------------------------ the tracer

class BackwardsTracer(Tracer):
    """``with loss.backward(...):`` — run autograd with the body interleaved over the gradients."""

    def __init__(self, tensor: torch.Tensor, args: tuple, kwargs: dict) -> None:
        super().__init__(None)
        self.tensor = tensor
        self._backward_args = args
        self._backward_kwargs = kwargs

    def execute(self, ns) -> None:
        interleaver = GradInterleaver()
        mediator = BackwardsMediator(self._code(), ns, None, name="backward")
        _install_grad()
        try:
            interleaver.start([mediator], 0)
            _real_backward(self.tensor, *self._backward_args, **self._backward_kwargs)
            interleaver.finish()
        finally:
            interleaver.stop()
            _uninstall_grad()
            self.tensor = None


# ------------------------------------------------------------------ Tensor.backward

_with_cache: Dict[Tuple[int, int], Tuple[object, bool]] = {}  # (id(code), lasti) -> (code, opens)
WITH_CACHE_BOUND = 4096


def _opens_with(frame) -> bool:
    """Is the call ``frame`` is making the context expression of a with-statement?

    Decided from the bytecode: the instruction after the call enters a with-block
    (``BEFORE_WITH`` on 3.11–3.13, ``SETUP_WITH`` before). Other interpreters ask
    the frontend. Cached per (code, instruction).
    """
    code = frame.f_code
    key = (id(code), frame.f_lasti)  # by id: hashing a code object is expensive and uncached
    entry = _with_cache.get(key)
    if entry is not None and entry[0] is code:
        return entry[1]
    hit = _bytecode_opens_with(code, frame.f_lasti)
    if hit is None:
        hit = _frontend_opens_with(frame)
    if len(_with_cache) >= WITH_CACHE_BOUND:
        _with_cache.clear()
    _with_cache[key] = (code, hit)
    return hit


def _bytecode_opens_with(code, lasti: int):
    # ``f_lasti`` may point into the call's inline cache (3.11+): the call is the
    # last real instruction at or before it, and the one after decides.
    for ins in dis.get_instructions(code):
        if ins.offset > lasti:
            if ins.opname in _WITH_OPS:
                return True
            return False if sys.version_info < (3, 14) else None
    return False


def _frontend_opens_with(frame) -> bool:
    try:
        import libcst as cst

        from compiler.frontend import locate_with, source_for_frame

        source = source_for_frame(frame)
        located = locate_with(source.text, frame.f_lineno, first_line=source.first_line,
                              filename=source.filename)
    except Exception:
        return False
    for item in located.node.items:
        call = item.item
        if isinstance(call, cst.Call) and isinstance(call.func, cst.Attribute) and call.func.attr.value == "backward":
            return True
    return False


def _entered_as_context(frame) -> bool:
    owner = claims.compiled_unit_of(frame)
    if owner is not None and frame.f_lineno not in owner.headers:
        return False
    return _opens_with(frame)


@functools.wraps(_real_backward)
def backward(self, *args, **kwargs):
    if _entered_as_context(sys._getframe(1)):
        return BackwardsTracer(self, args, kwargs)
    return _real_backward(self, *args, **kwargs)


def install() -> None:
    """Route ``Tensor.backward`` through :func:`backward` (done once, at nnsight import)."""
    if torch.Tensor.backward is not backward:
        torch.Tensor.backward = backward


registries.track("nnsight.tracing.backwards.with_sites", lambda: len(_with_cache), WITH_CACHE_BOUND)
