"""``with model.trace(...)`` on a synchronous vLLM engine.

On exit the body is prepared (:mod:`.batch`), its requests are added to the
engine and stepped to completion, then one ``collective_rpc("nnsight_collect")``
hands the worker the finished ``RequestOutput`` objects and brings back the saved
variables, which are written into the caller's frame. ``tracer.result`` is the
list of ``RequestOutput`` (one per request, invoke order).
"""
from typing import Any, Dict, List

from runtime.frames import write_back

from ...tracing.interleaving import InterleavingTracer
from . import transport
from .batch import Prepared, prepare, unpack


class VLLMTracer(InterleavingTracer):
    """Trace of one vLLM generation (one request per invoke prompt)."""

    def __init__(self, model, *args, **kwargs) -> None:
        remote = kwargs.pop("remote", None)
        if remote:
            raise NotImplementedError("remote= is not supported for VLLM models: the engine already runs "
                                      "the interventions in its own workers.")
        super().__init__(model, *args, **kwargs)
        self._vllm_saved: Dict[str, Any] = {}

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
        self._output, self._vllm_saved = run(model.llm, prepared)

    def _write_back(self, ns) -> None:
        write_back(self._frame, self._vllm_saved)


def run(llm, prepared: Prepared):
    """Add the requests, step the engine until they finish, collect the saves."""
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
    except BaseException:
        unfinished = [rid for rid, i in ids.items() if i not in outputs]
        if unfinished:
            engine.abort_request(unfinished)
        try:
            _collect(llm, prepared, final=True)  # free the worker's state; the original error wins
        except Exception:
            pass
        raise
    reply = _collect(llm, prepared, final=True)
    saved = unpack(prepared, reply)
    return [outputs[i] for i in sorted(outputs)], saved


def _collect(llm, prepared: Prepared, final: bool):
    try:
        replies: List[Any] = llm.collective_rpc(
            "nnsight_collect", args=(prepared.trace_id, transport.encode_outputs(prepared.outputs), final))
    except Exception:
        if final:
            raise
        return None
    return next((r for r in replies if r is not None), None)
