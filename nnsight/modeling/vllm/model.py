"""``VLLM(path)``: a vLLM engine whose generations run nnsight interventions.

    model = VLLM("path/or/hub-id", dispatch=True)          # mode="async" for AsyncLLM
    with model.trace("Hello", temperature=0.0, max_tokens=5) as tracer:
        logits = list().save()
        for step in tracer.iter[:]:
            logits.append(model.logits.output)
        output = tracer.result.save()

This process never holds the weights: the engine loads them in its worker
(:mod:`.worker`), which may be another process. Here the envoy tree is built
from stubs of the worker's modules (:mod:`.tree`), plus ``model.logits`` and
``model.samples``. Keyword arguments go to the engine (``vllm.LLM`` /
``AsyncEngineArgs``) with CPU defaults (:mod:`.config`); trace and invoke
keyword arguments are sampling parameters.
"""
import os
from typing import Any, Dict, Optional

import torch

from ..base import NNsight
from . import tree
from .config import engine_kwargs
from .wrappers import add_wrappers

MODES = ("sync", "async")


class VLLM(NNsight):
    """A vLLM-served model wrapped for tracing (see the module docstring)."""

    def __init__(self, model: str, *, dispatch: bool = False, mode: str = "sync", tokenizer=None,
                 rename: Optional[Dict[str, Any]] = None, **kwargs) -> None:
        if not isinstance(model, str):
            raise TypeError(
                f"VLLM takes a model name or path (vLLM loads the weights in its workers), got "
                f"{type(model).__name__}. To trace a torch module you already have, use "
                f"`NNsight(module)` or `LanguageModel(module, tokenizer=...)`.")
        if mode not in MODES:
            raise ValueError(f"mode= must be 'sync' or 'async', got {mode!r}.")
        d = self.__dict__
        d["repo_id"] = model
        d["mode"] = mode
        d["tokenizer"] = tokenizer
        d["llm"] = None  # vllm.LLM, or an AsyncEngine (async mode)
        d["dispatched"] = False
        d["engine_in_process"] = False  # set by dispatch()
        d["_engine_kwargs"] = kwargs
        d["_load_kwargs"] = {k: kwargs[k] for k in ("revision",) if k in kwargs}
        super().__init__(tree.Stub("VLLM", "not loaded yet: dispatch=True or a first trace loads it"),
                         rename=rename)
        add_wrappers(self)
        if dispatch:
            self.dispatch()

    # ---------------------------------------------------------------- loading

    def dispatch(self) -> None:
        """Start the engine (it loads the weights) and mirror its module tree here."""
        if self.dispatched:
            return
        kwargs = engine_kwargs(self.repo_id, self._engine_kwargs)
        ray_started = _connect_ray(kwargs)
        try:
            if self.mode == "async":
                from .async_backend import AsyncEngine

                engine = AsyncEngine(self.repo_id, kwargs)
            else:
                from vllm import LLM

                engine = LLM(model=self.repo_id, **kwargs)
        except BaseException:
            _disconnect_ray(ray_started)
            raise
        self.__dict__["_ray_started"] = ray_started
        self.__dict__["llm"] = engine
        if self.tokenizer is None:
            self.__dict__["tokenizer"] = engine.get_tokenizer()
        rows = next(r for r in engine.collective_rpc("nnsight_tree") if r is not None)
        self._update(tree.build([tuple(r) for r in rows]))
        pid = next((p for p in engine.collective_rpc("nnsight_pid") if p is not None), None)
        # the engine's first worker runs in this process: finished requests are handed to it as they are
        self.__dict__["engine_in_process"] = self.mode == "sync" and pid == os.getpid()
        self.__dict__["dispatched"] = True

    def _ensure_dispatched(self) -> None:
        self.dispatch()

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_") or self.__dict__.get("dispatched", True):
                raise
        self.dispatch()  # an envoy of the real model was asked for before loading it
        return super().__getattr__(name)

    # ---------------------------------------------------------------- tracing

    def trace(self, *inputs, **kwargs):
        """``with model.trace(prompt, **sampling_params) as tracer:`` — one generation, interleaved."""
        if self.mode == "async":
            from .async_backend import AsyncVLLMTracer

            return AsyncVLLMTracer(self, *inputs, **kwargs)
        from .tracer import VLLMTracer

        return VLLMTracer(self, *inputs, **kwargs)

    def generate(self, *inputs, **kwargs):
        """Same as :meth:`trace` (vLLM always generates)."""
        return self.trace(*inputs, **kwargs)

    def _split_inputs(self, args: tuple, kwargs: Dict[str, Any]):
        if args:
            return (args, {}), kwargs
        return None, kwargs

    def _execute(self, *args, **kwargs) -> Any:
        raise NotImplementedError("VLLM models run through `model.trace(...)`.")

    def shutdown(self) -> None:
        """Stop the engine and free its workers."""
        engine = self.__dict__.get("llm")
        ray_started = self.__dict__.pop("_ray_started", None)
        self.__dict__["llm"] = None
        self.__dict__["dispatched"] = False
        try:
            if engine is None:
                return
            close = getattr(engine, "shutdown", None)
            if not callable(close):  # vllm.LLM: its engine core client stops the executor and workers
                core = getattr(getattr(engine, "llm_engine", None), "engine_core", None)
                close = getattr(core, "shutdown", None)
            if callable(close):
                close()
        finally:
            _disconnect_ray(ray_started)


def _connect_ray(kwargs: Dict[str, Any]):
    """With the Ray backend, connect (or start) Ray in this process, which outlives the engine core.

    The engine core may run in a child process (vLLM's default, always for ``mode="async"``)
    that is ended with SIGTERM: a cluster started there would leave Ray's agent processes
    behind. Started here, it stops at :meth:`VLLM.shutdown` (or when this process exits).
    """
    backend = kwargs.get("distributed_executor_backend")
    if not getattr(backend, "nnsight_ray", False):
        return None
    from .executor_ray import connect

    world = int(kwargs.get("tensor_parallel_size") or 1) * int(kwargs.get("pipeline_parallel_size") or 1)
    return connect(world)


def _disconnect_ray(started) -> None:
    if started:
        from .executor_ray import disconnect

        disconnect(started)
