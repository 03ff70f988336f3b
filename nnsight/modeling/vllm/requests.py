"""Worker side bookkeeping: which request runs which intervention, and where its rows are.

:class:`RequestHelper` (one per model runner)

* loads a trace's program the first time one of its requests arrives, through
  the one accept path (:mod:`runtime.accept`: user modules blocked, program
  verified and version-gated, then loaded), runs the trace body's
  own statements once (its invokes are separate requests), and starts one
  mediator per request in the trace's shared namespace;
* before each forward pass, gives every scheduled request's mediator its batch
  group: ``(first token, tokens)`` in vLLM's flat ``[total_tokens, ...]``
  tensors, then ``(request row, 1)`` for logits and samples (continuous
  batching: requests join and leave between steps);
* on :meth:`collect`, feeds finished requests their ``RequestOutput`` (the
  ``tracer.result`` provider), ends their interventions, and returns the saved
  variables as encoded value trees and any intervention errors.
"""
import os
from typing import Any, Dict, List, Optional, Set, Tuple

from compiler.fallbacks import FALLBACKS
from runtime import accept, saves
from runtime.local_blocks import LOCAL_BLOCKS
from runtime.builder import CompiledProgram
from runtime.interleaver import RESULT
from runtime.loader import Loader
from runtime.mediator import Mediator

from .mediator import HubMediator

from ...config import CONFIG
from ...tracing.hookplan import modules_to_patch
from ...tracing.tracebacks import register_program_sources
from . import sampling, transport
from .worker_model import WorkerModel, WorkerTracer


MAX_LOG_LINES = 1000  # per collect: a server keeps at most its own per-job limit anyway
MAX_LOG_LINE_CHARS = 8192


class TraceContext:
    """One trace on the worker: its loaded program, shared namespace and mediators."""

    def __init__(self, trace_id: str, expected: int) -> None:
        self.trace_id = trace_id
        self.expected = expected
        self.loader: Optional[Loader] = None
        self.tracer: Optional[WorkerTracer] = None
        self.compiled: Optional[CompiledProgram] = None
        self.ns: Dict[str, Any] = {}
        self.mediators: Dict[int, Mediator] = {}  # invoke index -> mediator
        self.results: Dict[int, Any] = {}  # invoke index -> RequestOutput (finished)
        self.error: Optional[BaseException] = None  # the program could not be loaded / set up
        self.files: Set[str] = set()
        self.entered = False
        self.reported: Set[int] = set()  # stopped invokes already reported to the client
        self.logs: Optional[List[str]] = None  # print() lines, when the request asks for them back
        self.logs_dropped = 0

    def log(self, line: str) -> None:
        """One printed line, kept up to :data:`MAX_LOG_LINES` (then only counted)."""
        if len(self.logs) < MAX_LOG_LINES:
            self.logs.append(line[:MAX_LOG_LINE_CHARS])
        else:
            self.logs_dropped += 1


class RequestHelper:
    """Per-runner registry of traces and requests (see the module docstring)."""

    def __init__(self, model: WorkerModel) -> None:
        self.model = model
        self.traces: Dict[str, TraceContext] = {}
        self.requests: Dict[str, Tuple[str, int]] = {}  # vLLM request id -> (trace id, invoke)
        self.batch: List[Tuple[Mediator, Tuple[int, int], Tuple[int, int]]] = []

    @property
    def interleaver(self):
        return self.model.interleaver

    # ------------------------------------------------------------------ arrivals

    def add_requests(self, scheduler_output) -> None:
        """Register the newly scheduled requests that carry an intervention; their interventions start
        together, one hand-off to the hub per trace."""
        starting: Dict[str, List[Tuple[Mediator, Optional[List[str]]]]] = {}
        for data in scheduler_output.scheduled_new_reqs:
            fields = sampling.untag(data.sampling_params)
            if fields is None or data.req_id in self.requests:
                continue
            payload, trace_id, invoke, unit, expected = fields
            ctx = self.traces.get(trace_id)
            if ctx is None:
                ctx = self.traces[trace_id] = TraceContext(trace_id, expected)
                if sampling.keeps_logs(data.sampling_params):
                    ctx.logs = []
                self._load(ctx, payload, setup=unit != 0)
            self.requests[data.req_id] = (trace_id, invoke)
            if unit is None or ctx.error is not None or invoke in ctx.mediators:
                continue
            mediator = self._mediator(ctx, invoke, unit, data.sampling_params.max_tokens,
                                      sampling.entry_of(data.sampling_params))
            starting.setdefault(trace_id, []).append((mediator, self._plan(mediator)))
        for trace_id, started in starting.items():
            with self.traces[trace_id].loader.installed():
                self.interleaver.add_all(started)

    def _load(self, ctx: TraceContext, payload: bytes, setup: bool) -> None:
        try:
            log = ctx.log if ctx.logs is not None else None
            with accept.accepted(payload, lambda key: self.model, log) as job:
                program = job.program
                tracer = WorkerTracer(self.model)
                job.loader.tracer = tracer
                ns = accept.prepare_namespace(job.loader.namespace())
                ns[LOCAL_BLOCKS] = accept.local_blocks(job, None)  # no client here: tracer.local() is refused
                compiled = job.loader.compile(program)
                tracer._compiled, tracer._unit_id = compiled, 0
                ctx.files = job.files() | set(register_program_sources(program))
                ctx.loader, ctx.tracer, ctx.compiled, ctx.ns = job.loader, tracer, compiled, ns
                saves.enter()
                ctx.entered = True
                if setup:  # the body's own statements (its invokes arrive as requests)
                    exec(compiled.units[0].code, ns)
        except BaseException as error:  # noqa: B902 - reported at collect time
            ctx.error = error

    def _mediator(self, ctx: TraceContext, invoke: int, unit: int, max_tokens: Optional[int],
                  entry: Optional[int] = None) -> Mediator:
        """The intervention of one request of ``ctx`` (started by :meth:`add_requests`)."""
        shared = CONFIG.APP.CROSS_INVOKER or ctx.expected == 1
        entries = ctx.tracer.entries
        own = entries[entry] if entry is not None and entry < len(entries) else None
        mediator = HubMediator(ctx.compiled.units[unit].code, ctx.ns if shared else dict(ctx.ns),
                                  None, name=f"invoke {invoke}", bindings=dict(own) if own else None)
        ctx.mediators[invoke] = mediator
        ctx.tracer.limits[mediator] = max_tokens
        return mediator

    def _plan(self, mediator: Mediator) -> Optional[List[str]]:
        """The module paths ``mediator``'s program may touch (read from its IR), or None: all of them."""
        pairs = modules_to_patch(self.model, [mediator])
        if pairs is None:
            FALLBACKS.note("vllm.watch_all", f"{mediator.name}: no static hook plan")
            return None
        return [path for path, _ in pairs]

    # ------------------------------------------------------------------ batch groups

    def schedule(self, req_ids: List[str], num_tokens: Dict[str, int]) -> bool:
        """Lay out this step's batch (vLLM's order); True if any intervention takes part."""
        batch = []
        start = 0
        for row, req_id in enumerate(req_ids):
            n = int(num_tokens.get(req_id, 0))
            hit = self.requests.get(req_id)
            if hit is not None:
                ctx = self.traces.get(hit[0])
                mediator = ctx.mediators.get(hit[1]) if ctx is not None else None
                if mediator is not None and not mediator.done:
                    batch.append((mediator, (start, n), (row, 1)))
            start += n
        self.batch = batch
        return bool(batch)

    def begin(self, phase: str, total: int) -> None:
        """Activate interleaving for ``phase`` ("tokens": forward pass, "rows": logits/samples)."""
        interleaver = self.interleaver
        mediators = []
        for mediator, tokens, rows in self.batch:
            if not mediator.done:
                mediator.batch_group = tokens if phase == "tokens" else rows
                mediators.append(mediator)
        interleaver.mediators = mediators
        # The base interleaver's fast paths (one mediator) count on `counts` directly: make it
        # that mediator's own counter.
        interleaver.counts = interleaver.steps.get(mediators[0], {}) if len(mediators) == 1 else {}
        interleaver.batcher.total = total
        interleaver.active = True

    def end_phase(self) -> None:
        interleaver = self.interleaver
        interleaver.active = False
        interleaver.mediators = []
        interleaver.batcher.current = None

    def finished(self, req_ids) -> None:
        """Requests vLLM dropped: they leave the batch (their mediators wait for :meth:`collect`)."""
        for req_id in req_ids:
            self.requests.pop(req_id, None)

    # ------------------------------------------------------------------ tracer.stop()

    def stopped(self, trace_id: str) -> List[int]:
        """Invokes of the trace whose intervention called ``tracer.stop()`` since the last call."""
        ctx = self.traces.get(trace_id)
        if ctx is None:
            return []
        stopped = self.interleaver.stopped
        found = [invoke for invoke, mediator in ctx.mediators.items()
                 if mediator in stopped and invoke not in ctx.reported and invoke not in ctx.results]
        ctx.reported.update(found)
        return sorted(found)

    # ------------------------------------------------------------------ results

    def collect(self, trace_id: str, outputs: bytes, final: bool, local: bool = False,
                caller_pid: Optional[int] = None) -> Dict[str, Any]:
        """Finish the given requests and return the trace's saves (all of them when ``final``).

        ``local``: the caller is the user's own process (not a server that sends the saved bytes on
        to its client): the bytes are compressed at zstd's fastest level. ``caller_pid``: the
        caller's process; when it is this one (an in-process engine), plain saves are handed over
        as copies under ``"shared"`` instead of bytes (:func:`transport.share_saves`)."""
        ctx = self.traces.get(trace_id)
        if ctx is None:
            return {"saved": None, "errors": [transport.encode_error(RuntimeError(
                f"the vLLM worker has no trace {trace_id!r} (it never received its requests, or "
                f"they were already collected)"), set())], "done": True}
        errors = []
        try:
            if isinstance(outputs, dict):  # handed over by a caller in this process (an in-process engine)
                if caller_pid != os.getpid():
                    raise TypeError("request outputs as objects come only from this process")
                results = outputs
            else:
                results = transport.decode_outputs(outputs)
        except BaseException as error:  # noqa: B902
            results, final = {}, True
            errors.append(transport.encode_error(error, set()))
        interleaver = self.interleaver
        with ctx.loader.installed() if ctx.loader is not None else _nothing():
            finishing = []
            for invoke, result in sorted(results.items()):
                if invoke in ctx.results:
                    continue
                ctx.results[invoke] = result
                mediator = ctx.mediators.get(invoke)
                if mediator is not None:
                    finishing.append((mediator, result))
            done = final or len(ctx.results) >= ctx.expected
            # every mediator's end in one hand-off to the hub (three per request before)
            interleaver.hub.call(self._finish_all, finishing, list(ctx.mediators.values()) if done else [])
            if ctx.error is not None:
                errors.append(transport.encode_error(ctx.error, ctx.files))
            for invoke in sorted(ctx.mediators):
                error = interleaver.failed.get(ctx.mediators[invoke])
                if error is not None:
                    errors.append(transport.encode_error(error, ctx.files))
            saved = shared = None
            referenced: Set[int] = set()
            if ctx.loader is not None:
                try:
                    found = self._saved(ctx)
                    if local and caller_pid == os.getpid():
                        shared = transport.share_saves(found)
                    if shared is None:
                        saved = transport.encode_saves(found, ctx.loader.classref, ctx.loader.objref,
                                                       ctx.results, referenced, local)
                except BaseException as error:  # noqa: B902
                    errors.append(transport.encode_error(error, ctx.files))
        stopped = [] if done else self.stopped(trace_id)
        reply = {"saved": saved, "errors": errors, "done": done, "stopped": stopped,
                 "result_refs": sorted(referenced)}
        if shared is not None:
            reply["shared"] = shared
        if ctx.logs is not None:
            reply["logs"], reply["logs_dropped"] = ctx.logs, ctx.logs_dropped
            ctx.logs, ctx.logs_dropped = [], 0
        if done:
            self._drop(ctx)
        return reply

    def _finish_all(self, finishing: List[Tuple[Mediator, Any]], ending: List[Mediator]) -> None:
        """On the hub: the finished requests' ends (:meth:`_finish`), then ``ending``'s that never
        finished (aborted)."""
        for mediator, result in finishing:
            self._finish(mediator, result)
        for mediator in ending:
            if not mediator.done:
                self.interleaver.end(mediator)

    def _finish(self, mediator: Mediator, result: Any) -> None:
        """The request finished: no next step, ``tracer.result`` is its output, then the end."""
        interleaver = self.interleaver
        mediator.batch_group = None
        interleaver.counts = interleaver.steps.get(mediator, {})
        interleaver.end_steps(mediator)
        if not mediator.done:
            interleaver.provide(mediator, RESULT, result)
        interleaver.end(mediator)

    def _saved(self, ctx: TraceContext) -> Dict[str, Any]:
        names = ctx.compiled.writeback_names(0)
        found: Dict[str, Any] = {}
        spaces = [ctx.ns] + [m.namespace for m in ctx.mediators.values() if m.namespace is not ctx.ns]
        for ns in spaces:
            for name in names:
                if name in ns and id(ns[name]) in saves.SAVES:
                    found[name] = ns[name]
        return found

    def _drop(self, ctx: TraceContext) -> None:
        for mediator in ctx.mediators.values():
            self.interleaver.remove(mediator)
        for req_id in [r for r, (t, _) in self.requests.items() if t == ctx.trace_id]:
            del self.requests[req_id]
        self.traces.pop(ctx.trace_id, None)
        if ctx.entered:
            ctx.entered = False
            saves.exit()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
