"""The hosted model as the sandbox sees it: the real module tree, no weights, every call remote.

The warm template builds each hosted model once the way a client does
(``LanguageModel(path)``: the module tree on the meta device, the tokenizer)
and gives every module of the tree a forward that asks the model process to
run that module (:class:`SandboxLink`). So the whole nnsight runtime -- tracer,
invokes, interleaver, mediators, sessions, ``tracer.iter``, barriers, caches --
runs unchanged in the sandbox with the user's code, and only module calls cross:

* the model's forward pass runs in the model process; at each module the
  sandbox's interleaver has patched (its hook plan), the model process stops and
  sends the module's inputs (a HOOK); the sandbox runs its patched forward, whose
  interventions see and may swap the values, and whose "original" forward is
  again a remote call for that module: ping-pong per intervention point;
* ``model.lm_head(h)`` in a job is the same remote call, without hooks;
* ``generate`` runs in the model process; its streamer calls come back as HOOKs.

Weights never enter the sandbox: a module's parameters there are meta tensors.
"""
import weakref
from typing import Any, Dict, List, Optional, Tuple

from .channel import CALL, HOOK, LOCAL, RAISE, RETURN, Channel
from .values import SandboxSide

STREAMER_PUT, STREAMER_END = "$streamer.put", "$streamer.end"
_BUILTIN_ERRORS = {c.__name__: c for c in (RuntimeError, ValueError, TypeError, IndexError, KeyError,
                                           AttributeError, NotImplementedError, AssertionError, ZeroDivisionError)}


class HostedModelError(RuntimeError):
    """The hosted model raised while running a module for the sandbox."""


class SandboxLink:
    """The child's end of the protocol: calls into the model process and serves its HOOKs meanwhile."""

    def __init__(self, channel: Channel, standin: "StandIn", arena: Any = None) -> None:
        self.channel = channel
        self.standin = standin
        self.values = SandboxSide(arena)
        self.pending: List[BaseException] = []  # the sandbox's own exceptions, unwinding the model process
        self.streamer: Any = None

    def call(self, path: str, method: str, args: tuple, kwargs: dict, hooks: List[str], streamer: Any = None) -> Any:
        export = self.values.export
        self.channel.send(CALL, path, method, export(list(args)), export(dict(kwargs)), hooks, streamer is not None)
        outer, self.streamer = self.streamer, streamer if streamer is not None else self.streamer
        try:
            return self._wait()
        finally:
            self.streamer = outer

    def local(self, block: int, message: bytes) -> bytes:
        self.channel.send(LOCAL, block, message)
        return self._wait()

    def _wait(self) -> Any:
        channel = self.channel
        while True:
            frame = channel.recv()
            kind = frame[0]
            if kind == RETURN:
                return frame[1] if type(frame[1]) is bytes else self.values.load(frame[1])
            if kind == RAISE:
                info = frame[1]
                if info.get("abort") and self.pending:
                    raise self.pending.pop()
                cls = _BUILTIN_ERRORS.get(info.get("type", "").rpartition(".")[2], HostedModelError)
                raise cls(info.get("message", "the hosted model failed"))
            if kind == HOOK:
                self._hook(frame[1], frame[2], frame[3])
                continue
            raise RuntimeError("unexpected %r frame from the model process" % kind)

    def _hook(self, path: str, args_node: Any, kwargs_node: Any) -> None:
        try:
            args, kwargs = self.values.load(args_node), self.values.load(kwargs_node)
            if path == STREAMER_PUT:
                self.streamer.put(*args)
                result: Any = None
            elif path == STREAMER_END:
                self.streamer.end()
                result = None
            else:
                result = self.standin.modules[path].forward(*args, **kwargs)
            node = self.values.export(result)
        except BaseException as error:  # noqa: B902 - the user's error (or stop): unwinds the model first
            self.pending.append(error)
            self.channel.send(RAISE, {"abort": True})
            return
        self.channel.send(RETURN, node)


class StandIn:
    """One hosted model's weightless twin in the template; a forked child links it to its job."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.link: Optional[SandboxLink] = None
        root = model._module
        self.modules: Dict[str, Any] = dict(root.named_modules())
        self._paths: Dict[int, str] = {id(m): p for p, m in self.modules.items()}
        model.__dict__["dispatched"] = True  # never load weights here
        model.requires_grad_(False)  # as the model process hosts it (runtime/server/models.py)
        ref = weakref.ref(self)
        classes: Dict[Tuple[type, bool], type] = {}
        for path, module in self.modules.items():
            key = (type(module), path == "")
            if key not in classes:
                classes[key] = _remote_class(key[0], ref, key[1])
            module.__class__ = classes[key]

    def call(self, module: Any, method: str, args: tuple, kwargs: dict, streamer: Any = None) -> Any:
        if self.link is None:
            raise RuntimeError("this model runs in another process; it can only be called during a job")
        path = self._paths[id(module)]
        # a module's own forward is the sandbox's to hook; generate calls the root's forward once per step
        hooks = [p for p, m in self.modules.items() if "forward" in m.__dict__ and (p != path or method != "forward")]
        return self.link.call(path, method, args, kwargs, hooks, streamer)


def _remote_class(cls: type, standin: "weakref.ref", root: bool) -> type:
    def forward(self, *args, **kwargs):
        twin = standin()
        if twin.model.__dict__.get("_scanning"):  # a scan runs here, on fake tensors and meta weights
            return cls.forward(self, *args, **kwargs)
        return twin.call(self, "forward", args, kwargs)

    forward.__wrapped__ = cls.forward  # inspect.signature sees the module's own parameters
    namespace = {"forward": forward, "__module__": cls.__module__, "__qualname__": cls.__qualname__,
                 "__nnsight_remote__": True}
    if root:
        def generate(self, *args, **kwargs):
            streamer = kwargs.pop("streamer", None)
            return standin().call(self, "generate", args, kwargs, streamer)

        if getattr(cls, "generate", None) is not None:
            generate.__wrapped__ = cls.generate
        namespace["generate"] = generate
    return type(cls.__name__, (cls,), namespace)
