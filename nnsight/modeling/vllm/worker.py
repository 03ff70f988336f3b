"""nnsight's vLLM worker (``worker_cls``): the CPU worker with :class:`.model_runner.NNsightCPUModelRunner`.

Its public methods are the targets of ``collective_rpc`` from the user's process:
``nnsight_tree`` (the model's module tree, to build the envoys there),
``nnsight_stopped`` (requests whose intervention called ``tracer.stop()``, to
abort) and ``nnsight_collect`` (finish requests, return saves). Only the first tensor
parallel rank answers with data; the others return None.
"""
import os
from typing import Any, List, Optional

from vllm.v1.worker.cpu_model_runner import CPUModelRunner
from vllm.v1.worker.cpu_worker import CPUWorker

from . import tree
from .model_runner import NNsightCPUModelRunner
from .parent_watch import watch_parent


class NNsightCPUWorker(CPUWorker):
    """``CPUWorker`` whose model runner interleaves interventions."""

    def init_device(self) -> None:
        super().init_device()
        runner = self.model_runner
        if type(runner) is not CPUModelRunner:
            raise RuntimeError(
                f"nnsight's vLLM integration hooks the V1 CPU model runner, but this engine built "
                f"{type(runner).__module__}.{type(runner).__qualname__}. Set the environment "
                f"variable VLLM_USE_V2_MODEL_RUNNER=0 before creating the model.")
        # The runner adds only methods and class-level defaults: re-classing the one vLLM built
        # is the same as building ours (and avoids allocating its buffers twice).
        runner.__class__ = NNsightCPUModelRunner
        watch_parent()  # an engine core whose parent died stops (vLLM leaves it running)

    def _first_rank(self) -> bool:
        return getattr(self, "rank", 0) == 0

    def nnsight_tree(self) -> Optional[List[Any]]:
        """``(path, class name, extra_repr)`` of every module of the loaded model."""
        if not self._first_rank():
            return None
        return [list(row) for row in tree.describe(self.model_runner.model)]

    def nnsight_collect(self, trace_id: str, outputs: bytes, final: bool, local: bool = False,
                        caller_pid: Optional[int] = None) -> Optional[dict]:
        reply = self.model_runner.nnsight_collect(trace_id, outputs, final, local, caller_pid)
        return reply if self._first_rank() else None

    def nnsight_pid(self) -> Optional[int]:
        """This worker's process id (the first rank's): the caller hands objects over directly when it
        is the same process."""
        return os.getpid() if self._first_rank() else None

    def nnsight_stopped(self, trace_id: str) -> Optional[List[int]]:
        """Invoke indices of the trace whose intervention called ``tracer.stop()`` (not yet reported)."""
        stopped = self.model_runner.nnsight_stopped(trace_id)
        return stopped if self._first_rank() else None
