"""``mode="async"``: streaming generations with interventions on vLLM's ``AsyncLLM``.

    with model.trace("Hello", temperature=0.0, max_tokens=5) as tracer:
        logits = model.logits.output.save()
    async for output in tracer.backend():
        output.saves["logits"]          # the saved variables, on every streamed output

The trace's exit only prepares the requests (:mod:`.batch`); ``tracer.backend()``
submits them and streams their ``RequestOutput`` objects. After each one, a
``collective_rpc("nnsight_collect")`` brings back the saved variables as they are
at that point (``output.saves``); the last output also finishes the interventions
(``tracer.result`` inside, pending reads fail) and frees the worker's state. The
reply also names the requests whose intervention called ``tracer.stop()``: they
are aborted, and vLLM streams their final output (``finish_reason == "abort"``).

:class:`AsyncEngine` runs ``AsyncLLM`` on an event loop of its own (a daemon
thread), so the model can be created outside any loop and used from any number
of ``asyncio.run`` calls; ``AsyncLLM`` always runs its engine core in a separate
process, so this path is also the cross-process one.
"""
import asyncio
import threading
import os
from typing import Any, AsyncIterator, Dict, Optional

from . import transport
from .batch import Prepared, prepare, unpack
from .tracer import VLLMTracer


class AsyncEngine:
    """An ``AsyncLLM`` driven on its own event loop thread (see the module docstring)."""

    def __init__(self, path: str, kwargs: Dict[str, Any]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="nnsight-vllm-async", daemon=True)
        self.thread.start()
        try:
            self.engine = self.call(self._make(path, kwargs))
        except BaseException:
            self._stop_loop()
            raise

    @staticmethod
    async def _make(path: str, kwargs: Dict[str, Any]):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(AsyncEngineArgs(model=path, **kwargs))

    def call(self, coro) -> Any:
        """Run a coroutine on the engine's loop and wait for it (from sync code)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def collective_rpc(self, method: str, args: tuple = ()) -> Any:
        return self.call(self.engine.collective_rpc(method, args=args))

    def get_tokenizer(self):
        return self.engine.get_tokenizer()

    def shutdown(self) -> None:
        async def close():
            self.engine.shutdown()

        try:
            self.call(close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    # ------------------------------------------------------------------ streaming

    async def stream(self, prepared: Prepared) -> AsyncIterator[Any]:
        """Async generator for the caller's loop; the work happens on the engine's loop."""
        inner = self._stream(prepared)
        try:
            while True:
                future = asyncio.run_coroutine_threadsafe(inner.__anext__(), self.loop)
                try:
                    output = await asyncio.wrap_future(future)
                except StopAsyncIteration:
                    return
                yield output
        finally:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(inner.aclose(), self.loop))

    async def _collect(self, prepared: Prepared, outputs: Dict[int, Any], final: bool) -> Optional[dict]:
        replies = await self.engine.collective_rpc(
            "nnsight_collect", args=(prepared.trace_id, transport.encode_outputs(outputs), final, True, os.getpid()))
        return next((r for r in replies if r is not None), None)

    async def _stream(self, prepared: Prepared) -> AsyncIterator[Any]:
        queue: asyncio.Queue = asyncio.Queue()
        count = len(prepared.prompts)

        async def pump(i: int) -> None:
            try:
                async for out in self.engine.generate(prepared.prompts[i], prepared.params[i],
                                                      prepared.request_id(i)):
                    await queue.put((i, out))
            except BaseException as error:  # noqa: B902 - handed to the consumer
                await queue.put((i, error))
            finally:
                await queue.put((i, None))

        tasks = [asyncio.ensure_future(pump(i)) for i in range(count)]
        remaining, final = count, False
        try:
            while remaining:
                i, out = await queue.get()
                if out is None:
                    remaining -= 1
                    continue
                if isinstance(out, BaseException):
                    raise out
                new = {}
                if out.finished and i not in prepared.outputs:
                    prepared.outputs[i] = new[i] = out
                final = len(prepared.outputs) == count
                reply = await self._collect(prepared, new, final)
                out.saves = unpack(prepared, reply)
                for j in (reply or {}).get("stopped") or ():  # tracer.stop(): abort; vLLM streams
                    if int(j) not in prepared.outputs:        # its final "abort" output
                        await self.engine.abort(prepared.request_id(int(j)))
                yield out
        finally:
            for task in tasks:
                task.cancel()
            if not final:  # stopped early: free the worker's state for this trace
                try:
                    await self._collect(prepared, {}, True)
                except Exception:
                    pass


class AsyncVLLMTracer(VLLMTracer):
    """Trace whose exit prepares the requests; ``tracer.backend()`` streams them."""

    prepared: Optional[Prepared] = None

    def execute(self, ns) -> None:
        self._check_top_level()
        self.model._ensure_dispatched()
        self.prepared = prepare(self, ns, stream=True)

    def _write_back(self, ns) -> None:
        pass  # saved values arrive with each streamed output (`output.saves`)

    def backend(self) -> AsyncIterator[Any]:
        """Submit the trace's requests; an async iterator of ``RequestOutput`` with ``.saves``."""
        if self.prepared is None:
            raise RuntimeError(
                "Nothing to stream: `tracer.backend()` runs a trace once, after its with-block "
                "has exited (and only once).")
        prepared, self.prepared = self.prepared, None
        return self.model.llm.stream(prepared)
