"""Client side: turn a closed trace into vLLM requests (one per invoke prompt).

The trace's program is closed against the caller's frame and encoded exactly as
for ``remote='local'`` (:func:`nnsight.tracing.remote.compile_request`). The
body's own statements run here only to collect the invokes and their inputs
(the worker runs them again to build the shared namespace); invoke bodies run
only on the worker. Each prompt becomes one request whose ``SamplingParams``
carry the request bytes and its place in the trace (:mod:`.sampling`).
"""
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from compiler.ir.request import encode_request
from runtime.errors import EarlyStopException

from ...tracing.invoker import body_has_invokes
from ...tracing.remote import compile_request
from . import sampling


@dataclass
class Prepared:
    """A trace ready to submit: its requests and what decodes the worker's replies."""

    trace_id: str
    prompts: List[Any]
    params: List[Any]
    closure: Any
    request: Any
    outputs: Dict[int, Any] = field(default_factory=dict)
    may_stop: bool = False  # the program may call tracer.stop(): the sync tracer polls for it

    def request_id(self, invoke: int) -> str:
        return f"{self.trace_id}-{invoke}"


_USER_CODE = ("function", "class", "module")  # binding kinds of user code captured by value


def may_stop(compiled, program) -> bool:
    """Whether the program may call ``tracer.stop()``: some code of it names ``stop`` (nested code
    included), or it calls user code captured by value (a function may receive the tracer)."""
    if any(b.kind in _USER_CODE for b in program.bindings):  # the closed program's bindings
        return True

    def names_stop(code) -> bool:
        if "stop" in code.co_names:
            return True
        return any(names_stop(c) for c in code.co_consts if hasattr(c, "co_names"))

    return any(unit is not None and names_stop(unit.code) for unit in compiled.units)


def prepare(tracer, ns: Dict[str, Any], stream: bool = False) -> Prepared:
    """Close ``tracer``'s program, collect its invokes, build their requests."""
    request, closure = compile_request(tracer, tracer._frame)
    return prepare_payload(tracer, ns, encode_request(request), closure, request, stream)


def prepare_payload(tracer, ns: Dict[str, Any], payload: bytes, closure: Any, request: Any,
                    stream: bool = False) -> Prepared:
    """Collect the invokes of ``tracer``'s (compiled) body and build their requests, each carrying
    ``payload`` (the encoded request). A server calls this with the request bytes it received."""
    from vllm.sampling_params import RequestOutputKind

    model = tracer.model
    inputs, config = model._split_inputs(tracer._args, tracer._kwargs)
    tracer._invokes = []
    if inputs is not None and not body_has_invokes(tracer._compiled, tracer._unit_id):
        tracer._add_invoke(inputs[0], inputs[1], tracer._code())
    else:
        if inputs is not None:  # the trace's input is one more request, with no intervention
            tracer._add_invoke(inputs[0], inputs[1], None)
        try:
            exec(tracer._code(), ns)
        except EarlyStopException:
            raise NotImplementedError(
                "tracer.stop() in a VLLM trace's body, outside its invokes, is not supported (the "
                "body only collects the invokes, each of which is a request). Call tracer.stop() inside "
                "the `with tracer.invoke(...)` whose request should stop.") from None
    units = {id(unit.code): unit_id for unit_id, unit in enumerate(tracer._compiled.units)}
    prompts, params, unit_of, entry_of = [], [], [], []
    # The body's invokes, in the order it reached them; the worker runs the body again and reaches
    # them in the same order, so it can give each request that invoke's own values of the body's names.
    first_block = 1 if inputs is not None else 0  # entry 0 is then the trace's own input
    for index, (args, kwargs, code) in enumerate(tracer._invokes):
        if not args:
            raise ValueError(
                "Each vLLM invoke is one request and needs a prompt: `tracer.invoke(\"text\")`. "
                "Empty invokes (interventions on the whole batch) are not supported with VLLM: under "
                "continuous batching the batch changes every step. Put the intervention in each invoke "
                "instead (invokes share the trace's namespace: `rows = list().save()` before the invokes "
                "collects from all of them), or give one invoke a list of prompts "
                "(`tracer.invoke([\"a\", \"b\"])`: one request per prompt, each running the invoke's "
                "intervention).")
        for prompt in sampling.split_prompts(args):
            p = sampling.sampling_params({**config, **kwargs})
            if not stream:
                p.output_kind = RequestOutputKind.FINAL_ONLY
            prompts.append(prompt)
            params.append(p)
            unit_of.append(None if code is None else units[id(code)])
            entry_of.append(index - first_block if index >= first_block else None)
    if not prompts:
        raise ValueError(
            "The trace has no input: pass a prompt to `model.trace(prompt)` or to `tracer.invoke(prompt)`.")
    trace_id = uuid.uuid4().hex
    for i, p in enumerate(params):
        sampling.tag(p, payload, trace_id, i, unit_of[i], len(params), entry_of[i])
    return Prepared(trace_id, prompts, params, closure, request, may_stop=may_stop(tracer._compiled, request.program))


def unpack(prepared: Prepared, reply: Optional[dict]) -> Dict[str, Any]:
    """The saved variables of a worker reply; raises the first intervention error."""
    from . import transport

    if reply is None:
        raise RuntimeError("the vLLM worker sent no reply for this trace")
    errors = transport.errors_of(reply)
    if errors:
        raise errors[0]
    shared = reply.get("shared")
    if isinstance(shared, dict):  # an in-process engine's plain saves, already copied for this process
        return shared
    if reply.get("saved") is None:
        return {}
    saved = transport.decode_saves(reply["saved"], prepared.closure.resolve, prepared.outputs,
                                    prepared.closure.may_build)
    if not isinstance(saved, dict):
        raise RuntimeError("the vLLM worker's reply is not a dict of saved variables")
    return saved
