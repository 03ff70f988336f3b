"""Worker side: the vLLM model wrapped for interleaving, and the tracer its programs see.

:class:`WorkerModel` is what a request's program binds ``model`` to on the
worker (:class:`runtime.loader.Loader` resolves envoy paths against it). Its
interleaver is a :class:`.interleaver.VLLMInterleaver` and every module is
patched once, when the model is loaded; the patches only act while a phase of
an engine step with interventions is running. Under tensor parallelism the
interleaver knows which providers are sharded on this rank (:mod:`.tensor_parallel`).
"""
from typing import Any, Dict, List, Optional

import torch

from runtime.mediator import Mediator, current_mediator

from ..base import NNsight
from ...tracing.interleaving import InterleavingTracer
from .interleaver import VLLMInterleaver
from .tensor_parallel import shards
from .wrappers import add_wrappers


class WorkerModel(NNsight):
    """The worker's vLLM model as an nnsight root envoy (plus ``logits`` / ``samples``)."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__(module)
        interleaver = VLLMInterleaver()
        for _, envoy in self.named_modules():
            envoy.__dict__["_interleaver"] = interleaver
        add_wrappers(self)
        modules = self._patch_list()
        interleaver.shards = shards(modules)
        interleaver.patch(modules)
        interleaver.pin(self.path)  # the root's input starts each step (tracer.iter waits for it)

    @property
    def interleaver(self) -> VLLMInterleaver:
        return self._interleaver


class WorkerTracer(InterleavingTracer):
    """The tracer a program's ``tracer`` name binds to on the worker.

    Its invokes were sent as separate requests, so ``tracer.invoke(...)`` blocks
    only register nothing here; ``tracer.iter[:]`` ends after the current
    request's ``max_tokens`` steps.
    """

    def __init__(self, model: WorkerModel) -> None:
        super().__init__(model)
        self.limits: Dict[Mediator, Optional[int]] = {}
        # each `with tracer.invoke` the body reached: its own values of the body's names
        self.entries: List[Optional[Dict[str, Any]]] = []

    @property
    def _steps(self) -> Optional[int]:
        return self.limits.get(current_mediator())

    def _add_invoke(self, args: tuple, kwargs: dict, code, bindings=None, namespace=None) -> None:
        self.entries.append(bindings)
