"""nnsight on vLLM: ``from nnsight.modeling.vllm import VLLM``.

Client side: :mod:`.model` (``VLLM``), :mod:`.tracer` (sync), :mod:`.async_backend`
(``mode="async"``), :mod:`.batch` / :mod:`.sampling` (a trace → requests),
:mod:`.tree` (the module tree), :mod:`.config` (engine defaults),
:mod:`.executor_ray` (``distributed_executor_backend="ray"``).
Worker side: :mod:`.worker`, :mod:`.model_runner`, :mod:`.requests`,
:mod:`.interleaver`, :mod:`.worker_model`, :mod:`.tensor_parallel` (gather ->
intervene -> re-shard). :mod:`.transport` is what crosses.
"""
from .model import VLLM

__all__ = ["VLLM"]
