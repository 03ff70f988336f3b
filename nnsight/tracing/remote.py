"""Remote execution of tracing contexts, and its local simulation (``remote='local'``).

``with model.trace(x, remote='local'):`` runs the body the way a server would:

1. client: the tracer's program template is *closed* (:mod:`compiler.closure`)
   against the caller's frame, with the server policy enforced -- user code by
   value, server modules by name, data as value trees, a rejection as a
   diagnostic pointing at the offending line. With the traced call (model key,
   method, inputs) it makes a :class:`compiler.ir.request.Request`, encoded to
   bytes (``tracer.remote_payload``);
2. "server" (:class:`LocalServer`): with every user module hidden and
   un-importable (:func:`runtime.loader.block_user_modules`), the bytes are
   decoded, verified, loaded (:class:`runtime.loader.Loader`) and run by a fresh
   tracer of the hosted model (``Tracer.run_program``); the saved variables
   are encoded as a value tree and sent back as bytes (``tracer.remote_result``);
3. client: the reply is decoded -- classes and functions the server rebuilt
   from the user's code come back as the user's own objects -- and the saved
   variables are written into the caller's frame.

Nothing else crosses: changes the server makes to captured objects (a probe's
weights after an optimizer step, a counter) are only visible through saved
values, exactly as remotely. ``remote=True`` sends the same bytes to an nnsight
server (``nnsight-server``, the client in :mod:`nnsight.remote`), which runs
them through the same accept path (:mod:`runtime.accept`).
"""
import json
import sys
from typing import Any, Dict, Optional, Tuple

from compiler import access
from compiler.closure import close_program
from compiler.closure.frame_values import frame_values
from compiler.frontend.local_blocks import without_local_bodies
from compiler.ir import FACT_LOCAL
from compiler.ir.request import Request, decode_result, encode_request, saved_variables
from compiler.ir.values import decode_value
from runtime import accept
from runtime.loader import LoadError

from .irdump import dump_request
from .local_block import ClientLocalBlocks

LOCAL = "local"


def check_remote(remote: Any) -> Any:
    """Validate a ``remote=`` argument: None/False (local run), ``'local'`` (simulated server),
    True (the server at ``CONFIG.API.HOST``)."""
    if remote is None or remote is False:
        return None
    if remote == LOCAL or remote is True:
        return remote
    raise ValueError("remote= must be True, False, None or 'local', got %r" % (remote,))


# -- the traced call ----------------------------------------------------------------------------


def model_key(model: Any) -> str:
    """The key a server uses to find a hosted model: ``module.Class:{json}``."""
    cls = type(model)
    repo = model.__dict__.get("repo_id") if hasattr(model, "__dict__") else None
    if isinstance(repo, str):
        payload: Dict[str, Any] = {"repo_id": repo}
        revision = (model.__dict__.get("_load_kwargs") or {}).get("revision")
        if revision is not None:
            payload["revision"] = revision
    else:
        payload = {"local": "%x" % id(model)}  # a plain module: only a local server can host it
    alias = model.__dict__.get("_alias") if hasattr(model, "__dict__") else None
    if alias is not None:  # rename= is the client's view: the server applies it for the job
        payload["rename"] = alias.rename
    return "%s.%s:%s" % (cls.__module__, cls.__qualname__, json.dumps(payload, sort_keys=True))


def traced_call(tracer: Any) -> Tuple[str, tuple, dict]:
    """``(method, args, kwargs)`` that makes the same tracer on the server."""
    name = type(tracer).__name__
    if name == "ScanningTracer":
        return "scan", tuple(tracer._args), dict(tracer._kwargs)
    if hasattr(tracer, "_method_name"):
        return tracer._method_name, tuple(tracer._args), dict(tracer._kwargs)
    if hasattr(tracer, "_args") and hasattr(tracer, "_kwargs"):
        return "trace", tuple(tracer._args), dict(tracer._kwargs)
    if name == "Session":
        options = {k: v for k, v in getattr(tracer, "options", {}).items() if k not in ("remote", "blocking")}
        return "session", (), options
    raise NotImplementedError("remote execution of a %s is not supported yet" % name)


def server_tracer(model: Any, method: str, args: tuple, kwargs: dict) -> Any:
    """The server's tracer for a request's call."""
    if method == "trace":
        return model.trace(*args, **kwargs)
    if method == "session":
        return model.session(**kwargs)
    if method == "scan":  # shapes and dtypes on fake tensors: saved tensors come back as meta tensors
        from .scan import ServedScanningTracer

        return ServedScanningTracer(model, *args, **kwargs)
    module = getattr(model, "_module", None)
    refused = not isinstance(method, str) or method.startswith("_") or access.refused_method_name(method)
    fn = getattr(module, method, None) if not refused else None  # (save_pretrained writes files)
    if fn is None or not hasattr(model, "_method_tracer"):
        raise LoadError("the hosted model has no traceable method %r" % method)
    return model._method_tracer(method, fn, args, kwargs)


def model_for_key(model: Any, key: str):
    """The hosted ``model`` as the key's client sees it (its ``rename=`` aliases), for a ``with``."""
    from .. import aliasing

    _, _, payload = key.partition(":")
    try:
        rename = json.loads(payload).get("rename")
    except (ValueError, AttributeError):
        rename = None
    return aliasing.applied(model, rename if isinstance(rename, dict) else None)


# -- the (simulated) server ---------------------------------------------------------------------


class LocalServer:
    """A server in this process: hosts models by key, answers request bytes with result bytes.

    Everything from decoding the request to encoding the reply runs with the
    user's modules blocked, so it fails exactly where a remote server would.
    """

    def __init__(self) -> None:
        self.hosted: Dict[str, Any] = {}

    def host(self, key: str, model: Any) -> None:
        self.hosted[key] = model

    def handle(self, payload: bytes, local: Optional[accept.Transport] = None) -> bytes:
        """``local``: the client's answer to each ``tracer.local()`` block (bytes in, bytes out)."""
        return accept.answer(payload, self.hosted.get, server_tracer, local=local)


# -- the client -----------------------------------------------------------------------------------


def _frame_module(frame: Any) -> Optional[str]:
    name = frame.f_globals.get("__name__")
    module = sys.modules.get(name) if isinstance(name, str) else None
    return name if module is not None and module.__dict__ is frame.f_globals else None


def compile_request(tracer: Any, frame: Any):
    """Close the tracer's program against ``frame`` and make the request (client side).

    Returns ``(request, closure)``; raises DiagnosticError for code the server would refuse.
    """
    from ..envoy import Envoy
    from .base import Tracer

    model = tracer.model
    interleaver = getattr(model, "__dict__", {}).get("_interleaver")

    def model_path(obj: Any) -> Optional[str]:
        if not isinstance(obj, Envoy):
            return None
        if model is not None and obj.__dict__.get("_interleaver") is interleaver:
            return obj.path
        raise ValueError("'%s' belongs to another model than the one this trace runs" % obj.path)

    def envoy_at(path: str) -> Any:
        obj = model
        for part in path.split(".")[1:]:
            children = obj.__dict__.get("_children", {})
            obj = children[part] if part in children else getattr(obj, part)
        return obj

    program = without_local_bodies(tracer._compiled.program)  # local blocks' bodies stay here
    values, from_globals = frame_values(program, frame)
    method, args, kwargs = traced_call(tracer)
    closure = close_program(
        program, values, remote=True, model_path=model_path, envoy_at=envoy_at, tracer=tracer,
        is_tracer=lambda obj: isinstance(obj, Tracer), frame_module=_frame_module(frame),
        frame_globals=frame.f_globals, global_names=from_globals, inputs=[args, kwargs])
    args_tree, kwargs_tree = closure.inputs
    request = Request(closure.program, model_key(model), method, args_tree, kwargs_tree)
    return request, closure


def run_remote(tracer: Any, frame: Any) -> Dict[str, Any]:
    """Run ``tracer``'s body remotely; returns the saved variables to write back.

    ``remote='local'`` answers in this process; ``remote=True`` sends the request to the
    server (``tracer.backend`` is the job; with ``blocking=False`` nothing is written back
    now: ``tracer.backend()`` returns the saved values once the job is done).
    """
    request, closure = compile_request(tracer, frame)
    payload = encode_request(request)
    tracer.remote_request = request  # print_request(tracer.remote_request) shows what was sent
    tracer.remote_payload = payload
    dump_request(request, request.program)

    resolve, may_build = closure.resolve, closure.may_build
    hooks = getattr(tracer, "remote_reply_hooks", None)  # a model class whose replies hold its own types
    if hooks is not None:
        resolve, may_build = hooks(resolve, may_build)

    def decode(reply: bytes) -> Dict[str, Any]:
        tracer.remote_result = reply
        saved = decode_value(decode_result(reply), resolve=resolve, may_build=may_build)
        return saved_variables(saved, tracer._compiled.writeback_names(tracer._unit_id))

    blocks = None
    if any(FACT_LOCAL in u.facts for u in request.program.units):
        blocks = ClientLocalBlocks(tracer._compiled, frame, closure.resolve, closure.may_build)
    try:
        if tracer._remote is True:
            from ..remote import versions
            from ..remote.backend import RemoteBackend
            from ..remote.client import Client

            if not tracer._blocking and blocks is not None:
                raise ValueError("a trace with `with tracer.local():` blocks needs blocking=True: the "
                                 "client runs those blocks while the job runs")
            client = Client()

            def encode(version: Optional[int]) -> bytes:
                return payload if version is None else encode_request(request, version)

            backend = RemoteBackend(client, decode, local_blocks=blocks)
            tracer.backend = backend
            backend.submit(versions.encode_for(client.url, encode), tracer._blocking, encode=encode)
            tracer.remote_payload = backend.payload
            if not tracer._blocking:
                return {}
            return backend.wait()
        server = LocalServer()
        server.host(request.model, tracer.model)
        return decode(server.handle(payload, local=blocks.answer if blocks is not None else None))
    except Exception:
        if blocks is not None and blocks.failure is not None:
            raise blocks.failure from None  # the local block's own error, at the user's line
        raise
