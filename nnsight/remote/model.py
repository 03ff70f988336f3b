"""``RemoteModel``: a model hosted by a server, used from a client without torch (CPython 3.9+).

    from nnsight import RemoteModel
    model = RemoteModel("gpt2", host="127.0.0.1:8000", api_key="nns_...")
    with model.trace("The Eiffel Tower is in the city of"):
        logits = model.lm_head.output.save()

The client has no weights and no module tree: the ``with`` body is lowered to
IR by the compiler (as any trace is), closed over the caller's frame (user code
by value, server modules by name), and sent; ``model`` in the body is the
hosted model's root envoy on the server. Saved values come back as for
``remote=True``; tensors as numpy arrays (nested lists without numpy) when
torch is not installed (:mod:`nnsight.remote.arrays`).

``with tracer.local():`` inside the body runs that block here, mid-job, with the
values the server sends (:mod:`nnsight.remote.local_blocks`; without torch they
are numpy arrays or nested lists, and ``nnsight.save(x)`` marks what the block
saves); ``model.scan(...)`` gives shapes without running the model.
"""
import json
import sys
from typing import Any, Dict, Optional

from . import versions
from .backend import RemoteBackend
from .client import Client

MODEL_CLASS = "nnsight.modeling.language.LanguageModel"


class RemoteModel:
    """A hosted model by name (or the path / hub id it was hosted from)."""

    __nnsight_envoy_path__ = "model"  # the compiler's closure binds it as the model's root

    def __init__(self, name: str, host: Optional[str] = None, api_key: Optional[str] = None,
                 revision: Optional[str] = None) -> None:
        self.name = name
        self.host = host
        self.api_key = api_key
        self.revision = revision

    def __repr__(self) -> str:
        return "RemoteModel(%r)" % self.name

    @property
    def key(self) -> str:
        """The model key the server looks the model up by: ``import.path.ClassName:json``."""
        payload: Dict[str, Any] = {"repo_id": self.name}
        if self.revision is not None:
            payload["revision"] = self.revision
        return "%s:%s" % (MODEL_CLASS, json.dumps(payload, sort_keys=True))

    def client(self) -> Client:
        return Client(self.host, self.api_key)

    def trace(self, *inputs: Any, **kwargs: Any) -> "RemoteTracer":
        """``with model.trace(input):`` runs the body with the model's forward pass, on the server."""
        return RemoteTracer(self, "trace", inputs, kwargs)

    def generate(self, *inputs: Any, **kwargs: Any) -> "RemoteTracer":
        """``with model.generate(input, max_new_tokens=n) as tracer:`` on the server."""
        return RemoteTracer(self, "generate", inputs, kwargs)

    def scan(self, *inputs: Any, **kwargs: Any) -> "RemoteTracer":
        """``with model.scan(input):`` -- shapes and dtypes without running the model: the server
        runs the body on fake tensors, as a local ``model.scan`` does. Saved shapes come back as
        tuples; a saved tensor (which has no data) as a :class:`~compiler.ir.values.MappingRecord`
        with ``shape``, ``dtype`` and ``device`` (``"meta"``)."""
        return RemoteTracer(self, "scan", inputs, kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            "RemoteModel(%r).%s exists only inside a `with model.trace(...)` block, which runs on the "
            "server; the client holds no module tree" % (self.name, name))


class RemoteTracer:
    """A ``with`` block compiled and sent to the server; its saved variables are written back."""

    def __init__(self, model: RemoteModel, method: str, args: tuple, kwargs: dict) -> None:
        self.model = model
        self.method = method
        self.blocking = bool(kwargs.pop("blocking", True))
        kwargs.pop("remote", None)  # always remote
        self.args = args
        self.kwargs = kwargs
        self.backend: Optional[RemoteBackend] = None
        self.program = None
        self._frame = None
        self._trap = None

    def __enter__(self) -> "RemoteTracer":
        from compiler.frontend import lower, source_for_frame
        from runtime import skip

        frame = sys._getframe(1)
        source = source_for_frame(frame)
        self.program = lower(source.text, source.filename, frame.f_lineno, first_line=source.first_line)
        self._frame = frame
        self._trap = skip.arm(frame, lambda: self)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        from runtime import skip
        from runtime.frames import release_locals, write_back

        frame, self._frame = self._frame, None
        skip.disarm(frame, self._trap)
        if exc_type is not skip.SkipBody:
            return False
        try:
            saved = self._run(frame)
            if saved:
                write_back(frame, saved)
        except BaseException as error:  # the body was skipped on purpose: not part of the story
            error.__suppress_context__ = True
            raise
        finally:
            release_locals(frame)
        return True

    def _run(self, frame: Any) -> Dict[str, Any]:
        from compiler.closure import close_program
        from compiler.ir import FACT_LOCAL
        from compiler.closure.frame_values import frame_values
        from compiler.ir.request import Request, decode_result, encode_request, saved_variables
        from compiler.ir.values import decode_value
        from runtime import saves

        from .arrays import importable, tensors_as_arrays

        program = self.program
        has_local = any(FACT_LOCAL in u.facts for u in program.units)
        if has_local:
            from compiler.frontend.local_blocks import without_local_bodies

            if not self.blocking:
                raise ValueError("a trace with `with tracer.local():` blocks needs blocking=True: the client "
                                 "runs those blocks while the job runs")
            program = without_local_bodies(program)  # the blocks' bodies stay here
        values, global_names = frame_values(program, frame)
        f_globals = frame.f_globals
        name = f_globals.get("__name__")
        module = sys.modules.get(name) if isinstance(name, str) else None
        frame_module = name if module is not None and module.__dict__ is f_globals else None
        closure = close_program(program, values, remote=True, frame_module=frame_module, frame_globals=f_globals,
                                global_names=global_names, tracer=self,
                                is_tracer=lambda obj: isinstance(obj, RemoteTracer),
                                inputs=[tuple(self.args), dict(self.kwargs)])
        args_tree, kwargs_tree = closure.inputs
        request = Request(closure.program, self.model.key, self.method, args_tree, kwargs_tree)
        payload = encode_request(request)
        torch_here = importable("torch")
        assigned = frozenset(name for unit in self.program.units for name in unit.assigned)  # what a reply may bind

        def decode(reply: bytes) -> Dict[str, Any]:
            tree = decode_result(reply)
            if not torch_here:
                tree = tensors_as_arrays(tree)
            saved = decode_value(tree, resolve=closure.resolve, may_build=closure.may_build)
            return saved_variables(saved, assigned)

        blocks = None
        if has_local:
            from runtime.builder import CompiledProgram

            from .local_blocks import ClientLocalBlocks

            blocks = ClientLocalBlocks(CompiledProgram(self.program), frame, closure.resolve, closure.may_build,
                                       rewrite=None if torch_here else tensors_as_arrays)
        client = self.model.client()

        def encode(version: Optional[int]) -> bytes:
            return payload if version is None else encode_request(request, version)

        self.backend = RemoteBackend(client, decode, local_blocks=blocks)
        self.backend.submit(versions.encode_for(client.url, encode), self.blocking, encode=encode)
        if not self.blocking:
            return {}
        if blocks is None:
            return self.backend.wait()
        saves.enter()  # nnsight.save() in a block marks what it saves, as inside a local trace
        try:
            return self.backend.wait()
        except Exception:
            if blocks.failure is not None:
                raise blocks.failure from None  # the block's own error, at the user's line
            raise
        finally:
            saves.exit()
