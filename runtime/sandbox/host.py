"""The model process's end of a sandboxed job: runs the hosted model for the child, nothing else.

The child (the user's code) asks for module calls (CALL); the model process runs
the real module -- with a forward on each module the child's hook plan names,
which sends that module's inputs to the child (HOOK) and continues with what
the child answers -- and sends back the result. Everything the child sends is
treated as attacker-written: the frame kinds, module paths and method names are
checked against fixed tables, values are decoded by :class:`.values.HostSide`
(bounded, weights protected), and the job's own error report is reduced to
short strings.
"""
from typing import Any, Callable, Dict, List, Optional, Set

import torch

from compiler.ir.limits import DecodeLimits

from .channel import (CALL, DONE, DONE_HOSTED, FAILED, HOOK, LOCAL, LOG, RAISE, READY, RETURN, Channel, ChannelClosed,
                      ChannelError)
from .results import HostedResultError, fill_hosted
from .standin import STREAMER_END, STREAMER_PUT
from .values import BoundaryError, HostSide

_METHODS = ("forward", "generate")
MAX_LOG_LINE = 16384
MAX_INFO_TEXT = 65536
_MISSING = object()


class SandboxAbort(BaseException):
    """The child's own code raised (or stopped) during a HOOK: unwind the model's forward pass."""


class ChildFailed(Exception):
    """The child reported its job's error: ``info`` is safe to send to the client."""

    def __init__(self, info: Dict[str, Any]) -> None:
        super().__init__(info.get("message", ""))
        self.info = info


class ProtocolViolation(Exception):
    """The child broke the protocol; the job fails and the child is killed."""


class _Streamer:
    """HF's streamer protocol in the model process, relayed to the child's ``model.generator.streamer``."""

    def __init__(self, host: "HostSession") -> None:
        self.host = host

    def put(self, value: Any) -> None:
        self.host.hook(STREAMER_PUT, (value,), {})

    def end(self) -> None:
        self.host.hook(STREAMER_END, (), {})


class HostSession:
    """Serves one child's job against one hosted model (in the worker thread, one job at a time)."""

    def __init__(self, channel: Channel, root: torch.nn.Module, modules: Dict[str, torch.nn.Module],
                 protected: Set[int], log: Callable[[str], None],
                 local: Optional[Callable[[int, bytes], bytes]], limits: DecodeLimits, arena: Any = None) -> None:
        self.channel = channel
        self.root = root
        self.modules = modules
        self.values = HostSide(limits, protected, arena)
        self.log = log
        self.local = local
        self.hooked: Dict[str, Any] = {}  # path -> the module's forward before the hook (or _MISSING)
        self.depth = 0

    # -- the job
    def ready(self) -> None:
        """Wait for the child to say it is confined (its first frame)."""
        if self.channel.recv()[0] != READY:
            raise ProtocolViolation("the sandbox's first frame must say it is ready")

    def serve(self) -> bytes:
        """Serve the child until it reports its job's result bytes (or raises ChildFailed)."""
        with torch.no_grad():
            return self._wait(top=True)

    def _wait(self, top: bool = False) -> Any:
        channel = self.channel
        while True:
            frame = channel.recv()
            kind = frame[0]
            if kind == CALL:
                self._call(frame)
            elif kind == LOG:
                if len(frame) == 2 and type(frame[1]) is str:
                    self.log(frame[1][:MAX_LOG_LINE])
            elif kind == LOCAL:
                self._local(frame)
            elif kind == RETURN and not top:
                return self.values.load(frame[1]) if len(frame) == 2 else None
            elif kind == RAISE and not top:
                raise SandboxAbort()
            elif kind == DONE and top and len(frame) == 2 and type(frame[1]) is bytes:
                return frame[1]
            elif kind == DONE_HOSTED and top and len(frame) == 2:
                return self._result(frame[1])
            elif kind == FAILED and top and len(frame) == 2:
                raise ChildFailed(_safe_info(frame[1]))
            else:
                raise ProtocolViolation("the sandbox sent an unexpected %r frame" % kind[:20])

    def _result(self, tree: Any) -> bytes:
        """The result bytes of a job that saved objects of the model process (:mod:`.results`)."""
        try:
            return fill_hosted(tree, self.values, self.values.protected)
        except HostedResultError as error:
            raise ChildFailed({"type": "UnencodableValueError", "message": str(error)[:MAX_INFO_TEXT],
                               "hint": "save the object's tensors (its fields) instead", "frames": []}) from None

    def _local(self, frame: List[Any]) -> None:
        if len(frame) != 3 or type(frame[1]) is not int or type(frame[2]) is not bytes:
            raise ProtocolViolation("malformed LOCAL frame")
        try:
            if self.local is None:
                raise RuntimeError("this server cannot reach the client to run a `with tracer.local():` block")
            reply = self.local(frame[1], frame[2])
        except Exception as error:  # the exchange's own error, for the job to raise
            self.channel.send(RAISE, {"type": type(error).__name__, "message": str(error)[:MAX_INFO_TEXT]})
            return
        self.channel.send(RETURN, reply)

    # -- module calls
    def _call(self, frame: List[Any]) -> None:
        if len(frame) != 7 or type(frame[1]) is not str or frame[2] not in _METHODS or type(frame[5]) is not list:
            raise ProtocolViolation("malformed CALL frame")
        _, path, method, args_node, kwargs_node, hooks, stream = frame
        module = self.modules.get(path)
        if module is None or (method == "generate" and module is not self.root):
            raise ProtocolViolation("the sandbox asked for a module or method the hosted model does not have")
        if len(hooks) > len(self.modules) or any(type(h) is not str or h not in self.modules for h in hooks):
            raise ProtocolViolation("the sandbox named modules the hosted model does not have")
        if self.depth > 64:
            raise ProtocolViolation("module calls nested too deeply")
        installed = []
        self.depth += 1
        try:
            try:
                args = self.values.load(args_node)
                kwargs = self.values.load(kwargs_node)
                if type(args) is not list or type(kwargs) is not dict or not all(type(k) is str for k in kwargs):
                    raise BoundaryError("malformed call arguments")
                device = _device_of(module)
                if device is not None:  # values from the sandbox arrive in host memory
                    args, kwargs = _to_device(args, device), _to_device(kwargs, device)
                for hook in hooks:
                    if (hook != path or method != "forward") and hook not in self.hooked:
                        self._install(hook)
                        installed.append(hook)
                if method == "generate":
                    if stream:
                        kwargs["streamer"] = _Streamer(self)
                    result = module.generate(*args, **kwargs)
                else:
                    prior = self.hooked.get(path, _MISSING)
                    forward = module.forward if prior is _MISSING else (
                        type(module).forward.__get__(module) if prior is None else prior)
                    result = forward(*args, **kwargs)
                node = self.values.export(result)
            finally:
                for hook in reversed(installed):
                    self._uninstall(hook)
        except SandboxAbort:
            self.channel.send(RAISE, {"abort": True})
            return
        except (ProtocolViolation, ChannelError, ChannelClosed):
            raise
        except Exception as error:  # the model's (or a boundary) error, raised in the job's code
            self.channel.send(RAISE, {"type": type(error).__name__, "message": str(error)[:MAX_INFO_TEXT]})
            return
        finally:
            self.depth -= 1
        self.channel.send(RETURN, node)

    def _install(self, path: str) -> None:
        module = self.modules[path]
        prior = module.__dict__.get("forward")  # None: the class's forward
        self.hooked[path] = prior
        host = self

        def hooked_forward(*args, **kwargs):
            return host.hook(path, args, kwargs)

        module.__dict__["forward"] = hooked_forward

    def _uninstall(self, path: str) -> None:
        prior = self.hooked.pop(path)
        module = self.modules[path]
        if prior is None:
            module.__dict__.pop("forward", None)
        else:
            module.__dict__["forward"] = prior

    def hook(self, path: str, args: tuple, kwargs: dict) -> Any:
        """A hooked module was reached: the child's interventions run, then its answer is the output."""
        self.channel.send(HOOK, path, self.values.export(list(args)), self.values.export(dict(kwargs)))
        result = self._wait()
        device = _device_of(self.modules[path]) if path in self.modules else None
        return result if device is None else _to_device(result, device)


def _device_of(module: torch.nn.Module) -> Optional[torch.device]:
    """The accelerator a module's weights live on (None: host memory, where sandbox values arrive)."""
    for tensor in module.parameters():
        return tensor.device if tensor.device.type != "cpu" else None
    for tensor in module.buffers():
        return tensor.device if tensor.device.type != "cpu" else None
    return None


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device) if value.device.type == "cpu" else value
    if type(value) in (list, tuple):
        return type(value)(_to_device(v, device) for v in value)
    if type(value) is dict:
        return {k: _to_device(v, device) for k, v in value.items()}
    return value


def _safe_info(info: Any) -> Dict[str, Any]:
    """The child's error report, reduced to the fields and types a client expects."""
    if type(info) is not dict:
        info = {}
    out: Dict[str, Any] = {}
    for field in ("type", "message", "hint"):
        value = info.get(field, "")
        out[field] = value[:MAX_INFO_TEXT] if type(value) is str else ""
    frames = []
    raw = info.get("frames")
    for f in raw[:200] if type(raw) is list else ():
        if type(f) is list and len(f) == 4 and type(f[0]) is str and type(f[1]) is int and all(
                type(x) is str for x in (f[2], f[3])):
            frames.append([f[0][:4096], f[1], f[2][:256], f[3][:4096]])
    out["frames"] = frames
    return out
