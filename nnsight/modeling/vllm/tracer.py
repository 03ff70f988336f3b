"""``with model.trace(...)`` on a synchronous vLLM engine.

On exit the body is prepared (:mod:`.batch`), its requests are added to the
engine and stepped to completion, then one ``collective_rpc("nnsight_collect")``
hands the worker the finished ``RequestOutput`` objects and brings back the saved
variables, which are written into the caller's frame. ``tracer.result`` is the
list of ``RequestOutput`` (one per request, invoke order).

````remote=True`` sends the trace to an ``nnsight-server`` hosting the model with
``--engine vllm`` (no engine starts here): the same request bytes, batched there
with other clients' jobs; saved values (``vllm.outputs`` objects included) come back.

``tracer.stop()`` in an intervention: when the program may call it, after each
engine step the tracer asks the worker (``nnsight_stopped``) which requests'
interventions stopped, and aborts them in the engine; their ``RequestOutput``
is the one so far (tokens up to and including the step in which ``stop()`` ran,
``finish_reason == "abort"``).
"""
import os
from typing import Any, Dict, List

from runtime.frames import write_back

from ...tracing.interleaving import InterleavingTracer
from . import transport
from .batch import Prepared, prepare, unpack


class VLLMTracer(InterleavingTracer):
    """Trace of one vLLM generation (one request per invoke prompt)."""

    def __init__(self, model, *args, **kwargs) -> None:
        if kwargs.get("remote") == "local":
            raise NotImplementedError(
                "remote='local' is not supported for VLLM models: the local engine already runs every "
                "intervention through the server's accept path. Use remote=True (an nnsight-server "
                "hosting the model with --engine vllm) or leave remote= out.")
        super().__init__(model, *args, **kwargs)  # remote=True: sent to the server (no local engine)
        self._vllm_saved: Dict[str, Any] = {}

    def remote_reply_hooks(self, resolve, may_build):
        """``(resolve, may_build)`` for a server's reply: vLLM's output classes (``tracer.result``)
        by name besides what the request sent."""
        def vllm_resolve(ref):
            return transport.vllm_class(ref) if transport.names_vllm(ref) else resolve(ref)

        def vllm_may_build(cls):
            return transport.is_output_type(cls) or may_build(cls)

        return vllm_resolve, vllm_may_build

    def _check_top_level(self) -> None:
        if self._nested:
            raise NotImplementedError(
                "A VLLM trace can't run inside another tracing context (session, trace): open "
                "`with model.trace(...)` at the top level of your code.")

    def execute(self, ns) -> None:
        self._check_top_level()
        model = self.model
        model._ensure_dispatched()
        prepared = prepare(self, ns)
        self._output, self._vllm_saved = run(model.llm, prepared, model.engine_in_process)

    def _write_back(self, ns) -> None:
        write_back(self._frame, self._vllm_saved)


def run(llm, prepared: Prepared, in_process: bool = False):
    """Add the requests, step the engine until they finish, collect the saves.

    ``in_process``: the engine's worker runs in this process (``VLLM.engine_in_process``): the
    finished requests' outputs are handed to it as they are, not as bytes."""
    engine = llm.llm_engine
    ids: Dict[str, int] = {}
    outputs = prepared.outputs
    try:
        for i, (prompt, params) in enumerate(zip(prepared.prompts, prepared.params)):
            rid = prepared.request_id(i)
            engine.add_request(rid, prompt, params)
            ids[rid] = i
        while len(outputs) < len(ids) and engine.has_unfinished_requests():
            for out in engine.step():
                i = ids.get(out.request_id)
                if i is not None and out.finished:
                    outputs[i] = out
            if prepared.may_stop:
                _abort_stopped(llm, prepared, outputs)
    except BaseException:
        unfinished = [rid for rid, i in ids.items() if i not in outputs]
        if unfinished:
            engine.abort_request(unfinished)
        try:
            _collect(llm, prepared, True, in_process)  # free the worker's state; the original error wins
        except Exception:
            pass
        raise
    reply = _collect(llm, prepared, True, in_process)
    saved = unpack(prepared, reply)
    return [outputs[i] for i in sorted(outputs)], saved


def _abort_stopped(llm, prepared: Prepared, outputs: Dict[int, Any]) -> None:
    """Abort the requests whose intervention called ``tracer.stop()``; keep their output so far."""
    replies = llm.collective_rpc("nnsight_stopped", args=(prepared.trace_id,))
    stopped = next((r for r in replies if r is not None), None) or []
    engine = llm.llm_engine
    for i in stopped:
        i = int(i)
        if i in outputs:  # it finished in the same step
            continue
        rid = prepared.request_id(i)
        outputs[i] = _output_so_far(engine, rid)
        engine.abort_request([rid])


def _output_so_far(engine, rid: str):
    """The ``RequestOutput`` of an unfinished request as if it ended now (``finish_reason="abort"``)."""
    from vllm.v1.engine import FinishReason

    processor = engine.output_processor
    for internal in list(processor.external_req_ids.get(rid, ())):
        state = processor.request_states.get(internal)
        if state is None:
            continue
        output = state.make_request_output(new_token_ids=[], pooling_output=None,
                                           finish_reason=FinishReason.ABORT, stop_reason=None)
        if output is not None:
            return output
    raise RuntimeError(f"vLLM has no state for the stopped request {rid!r}")


def _collect(llm, prepared: Prepared, final: bool, in_process: bool = False):
    outputs = dict(prepared.outputs) if in_process else transport.encode_outputs(prepared.outputs)
    try:
        replies: List[Any] = llm.collective_rpc(
            "nnsight_collect", args=(prepared.trace_id, outputs, final, True, os.getpid()))
    except Exception:
        if final:
            raise
        return None
    return next((r for r in replies if r is not None), None)
