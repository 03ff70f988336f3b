"""Remote jobs on a hosted vLLM engine: request bytes in, vLLM requests, result bytes out.

An ``nnsight-server`` hosting a model with ``--engine vllm`` runs each remote job
in three steps (the dispatcher, ``runtime/server/vllm_dispatcher.py``, drives them):

1. :func:`admit` (the server's Python, one job at a time): the request goes
   through the one accept path (:mod:`runtime.accept`: decoded, verified,
   version-gated, loaded with the user's modules hidden); the trace body's own
   statements run once to collect its invokes (exactly what a local ``VLLM``
   client does before it submits), and every prompt becomes one vLLM request
   whose ``SamplingParams`` carry *the bytes the client sent* (:mod:`.sampling`).
2. :func:`generate` (a coroutine on the engine's event loop): the requests go
   into the one ``AsyncLLM`` engine, where they are batched continuously with
   every other job's requests and plain ones; the engine's worker runs each
   intervention (:mod:`.requests`). When all of the job's requests finished,
   one ``collective_rpc("nnsight_collect")`` returns its saves, errors and
   printed lines. Cancelling the coroutine aborts the job's requests and frees
   the worker's state for it.
3. :func:`result` (the server's Python): the worker's saves are decoded with the
   job's own loader and encoded as the result bytes of any remote job
   (``vllm.outputs`` objects such as ``tracer.result`` by class name).

``tracer.local()`` blocks are refused at step 1: the engine's worker has no way
to reach the client in the middle of a step.
"""
import asyncio
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from compiler.ir import FACT_LOCAL
from runtime import accept, saves
from runtime.loader import LoadError, block_user_modules
from runtime.local_blocks import LOCAL_BLOCKS

from . import sampling, transport
from .batch import Prepared, prepare_payload
from .tracer import VLLMTracer

METHODS = ("trace", "generate")  # a vLLM trace always generates
# Hugging Face generation keywords a RemoteModel / LanguageModel client may send, as vLLM's
HF_ALIASES = {"max_new_tokens": "max_tokens"}


class ServedTracer(VLLMTracer):
    """The tracer a remote job's program binds ``tracer`` to while its invokes are collected."""

    def __init__(self, model: Any, *args: Any, **kwargs: Any) -> None:
        for hf, ours in HF_ALIASES.items():
            if hf in kwargs:
                if ours in kwargs:
                    raise TypeError("pass %s= or %s=, not both" % (hf, ours))
                kwargs[ours] = kwargs.pop(hf)
        super().__init__(model, *args, **kwargs)


@dataclass
class ServedJob:
    """One admitted job: its accepted request (loader included) and its vLLM requests."""

    accepted: accept.Accepted
    prepared: Prepared

    @property
    def requests(self) -> int:
        return len(self.prepared.prompts)


def _discard(line: str) -> None:
    """The body runs here only to collect its invokes; its prints come from the worker's run."""


def admit(payload: bytes, model: Any, files: Optional[set] = None) -> ServedJob:
    """Step 1: accept ``payload`` for the hosted ``VLLM`` model and build its vLLM requests.

    ``files`` (if given) receives the program's source files as soon as they are known, so an
    error can be reported with the user's frames only. Raises the job's own error.
    """
    with accept.accepted(payload, lambda key: model, _discard) as job:
        if files is not None:
            files.update(job.files())
        request = job.request
        local = [u for u in job.program.units if FACT_LOCAL in u.facts]
        if local:
            raise LoadError(
                "%s:%d: `with tracer.local():` is not supported on a vLLM-hosted model: its interventions run "
                "inside the engine's steps, which cannot wait for the client. Save the values and continue "
                "after the trace" % (local[0].loc.file, local[0].header[0]))
        if request.method not in METHODS:
            raise LoadError("a vLLM-hosted model runs `model.trace(...)` / `model.generate(...)` (each a "
                            "generation), not %r" % (request.method,))
        loader = job.loader
        args = loader.decode(request.args)
        kwargs = loader.decode(request.kwargs)
        tracer = ServedTracer(model, *args, **dict(kwargs))
        loader.tracer = tracer
        ns = accept.prepare_namespace(loader.namespace())
        ns[LOCAL_BLOCKS] = accept.local_blocks(job, None)
        tracer._compiled, tracer._unit_id = loader.compile(job.program), 0
        saves.enter()
        try:
            prepared = prepare_payload(tracer, ns, payload, None, request)
        finally:
            saves.exit()
    if prepared.may_stop:  # tracer.stop() is polled on every streamed output
        from vllm.sampling_params import RequestOutputKind

        for params in prepared.params:
            params.output_kind = RequestOutputKind.CUMULATIVE
    for params in prepared.params:
        params.extra_args[sampling.LOGS] = True
    return ServedJob(job, prepared)


async def generate(engine: Any, prepared: Prepared) -> Dict[str, Any]:
    """Step 2, on the engine's loop: run the job's requests on ``engine`` (an ``AsyncLLM``) and
    return the worker's reply (saves, errors, printed lines). Cancelled: the requests are
    aborted and the worker forgets the job."""
    outputs = prepared.outputs

    async def one(i: int) -> None:
        async for out in engine.generate(prepared.prompts[i], prepared.params[i], prepared.request_id(i)):
            if out.finished:
                outputs.setdefault(i, out)
            elif prepared.may_stop:
                await _abort_stopped(engine, prepared)

    tasks = [asyncio.ensure_future(one(i)) for i in range(len(prepared.prompts))]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        unfinished = [prepared.request_id(i) for i in range(len(tasks)) if i not in outputs]
        try:
            if unfinished:
                await engine.abort(unfinished)
            await _collect(engine, prepared)  # frees the worker's state for this job
        except Exception:  # noqa: BLE001 - the original error (or the cancel) wins
            pass
        raise
    return await _collect(engine, prepared)


async def _abort_stopped(engine: Any, prepared: Prepared) -> None:
    replies = await engine.collective_rpc("nnsight_stopped", args=(prepared.trace_id,))
    for i in next((r for r in replies if r is not None), None) or ():
        if int(i) not in prepared.outputs:  # vLLM then streams its final "abort" output
            await engine.abort(prepared.request_id(int(i)))


async def _collect(engine: Any, prepared: Prepared) -> Dict[str, Any]:
    replies = await engine.collective_rpc(
        "nnsight_collect", args=(prepared.trace_id, transport.encode_outputs(prepared.outputs), True))
    reply = next((r for r in replies if r is not None), None)
    if not isinstance(reply, dict):
        raise RuntimeError("the vLLM worker sent no reply for this job")
    return reply


def logs(reply: Dict[str, Any]) -> List[str]:
    """The lines the job's interventions printed (a note when the worker dropped some)."""
    lines = [line for line in reply.get("logs") or () if isinstance(line, str)]
    dropped = reply.get("logs_dropped") or 0
    if dropped:
        lines.append("[%d more printed lines were dropped by the vLLM worker]" % dropped)
    return lines


def errors(reply: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The interventions' errors, as the server's error records (type, message, hint, user frames)."""
    found = []
    for data in reply.get("errors") or ():
        if not isinstance(data, dict):
            continue
        found.append({"type": "%s.%s" % (data.get("module"), data.get("qualname")),
                      "message": str(data.get("message", "")), "hint": "",
                      "frames": [list(f) for f in data.get("frames") or ()]})
    return found


def result(job: ServedJob, reply: Dict[str, Any]) -> bytes:
    """Step 3: the result bytes of the job's saves.

    The worker encoded them with a loader of the same request (same class and object
    references), so they are already the job's result, unless they refer to request outputs the
    server handed the worker (a saved ``tracer.result``): then they are decoded with the job's
    loader and encoded again with those outputs in place.
    """
    data = reply.get("saved")
    if isinstance(data, bytes) and not reply.get("result_refs"):
        return data
    loader = job.accepted.loader
    resolve: Callable[[Any], Any] = lambda ref: transport.vllm_class(ref) if transport.names_vllm(ref) \
        else loader.resolve_ref(ref)
    with block_user_modules(), loader.installed():
        saved = {} if data is None else transport.decode_saves(data, resolve, job.prepared.outputs,
                                                                loader.defined_here)
        if not isinstance(saved, dict):
            raise RuntimeError("the vLLM worker's reply is not a dict of saved variables")
        return accept.encode_saved(job.accepted, saved)
