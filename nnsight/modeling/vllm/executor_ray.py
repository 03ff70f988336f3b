"""``distributed_executor_backend="ray"``: vLLM's Ray executor, made to start on its own and on CPU.

``VLLM(..., distributed_executor_backend="ray")`` passes :class:`NNsightRayExecutor`
(a ``type[Executor]``, which vLLM accepts there) instead of the string. It is vLLM's
default Ray executor (``RayExecutorV2``: tensor-parallel workers are Ray actors
running the same worker loop as the ``"mp"`` backend) plus:

* :func:`connect` before vLLM looks for Ray: a Ray already initialized in this
  process is used as is; otherwise ``ray.init(address="auto")`` joins a cluster
  running on this machine (``ray start --head``, or ``RAY_ADDRESS``); if none runs
  and ``RAY_ADDRESS`` names a remote head (``host:6379``, not ``ray://``), this
  machine joins it as a driver-only node (``ray start --address=... --num-cpus=0``);
  else a fresh local cluster starts (``num_cpus`` at least the world size, no
  dashboard, workers at normal priority). :class:`~.model.VLLM` connects in the
  user's process before it creates the engine and :func:`disconnect` s at
  ``shutdown()``; the executor itself only connects when used without ``VLLM``,
  and then stops what it started with the engine.
* On the CPU platform (vLLM has no Ray device key for it) each worker is placed
  in a ``{"CPU": 1}`` bundle of the placement group, reports its rank as its
  "device id", and binds itself to its CPUs (:func:`bind_cpus`).
"""
import os
import subprocess
import sys
from contextlib import contextmanager
from typing import Any, Dict, Optional, Tuple

from vllm.platforms import current_platform
from vllm.v1.executor import ray_executor_v2
from vllm.v1.executor.ray_executor_v2 import RayExecutorV2, RayWorkerProc

CPU_KEY = "CPU"
BIND = "VLLM_CPU_OMP_THREADS_BIND"


def bind_cpus(mask: str, local_rank: int) -> None:
    """Pin this process (every thread) to ``local_rank``'s CPUs of ``mask`` ("0-3|4-7"), like vLLM's "mp"."""
    from vllm.utils.cpu_resource_utils import parse_id_list

    groups = mask.split("|")
    if mask in ("auto", "nobind") or local_rank >= len(groups):
        return
    cpus = set(parse_id_list(groups[local_rank]))
    if not cpus:
        return
    try:
        for tid in os.listdir("/proc/self/task"):
            os.sched_setaffinity(int(tid), cpus)
    except (AttributeError, OSError, ValueError):
        return
    import torch

    torch.set_num_threads(len(cpus))


class NNsightRayWorkerProc(RayWorkerProc):
    """vLLM's Ray worker actor; on CPU its "device" is its rank (there is no accelerator id).

    On CPU the worker also binds itself to its share of ``VLLM_CPU_OMP_THREADS_BIND``
    (as the ``"mp"`` backend does when it starts a worker process): ranks spin-wait
    for each other in every all-reduce, and two of them on one core made a decode
    step take ~0.3 s instead of ~10 ms on two cores.
    """

    def initialize_worker(self, local_rank: int, env_vars: Dict[str, str], *args, **kwargs) -> None:
        driver_env = kwargs.get("driver_env_vars") or (args[1] if len(args) > 1 else None) or {}
        mask = env_vars.get(BIND) or os.environ.get(BIND) or driver_env.get(BIND)
        if current_platform.is_cpu() and mask:
            bind_cpus(mask, local_rank)
        super().initialize_worker(local_rank, env_vars, *args, **kwargs)

    def get_node_and_physical_gpu_ids(self) -> Tuple[str, list]:
        if current_platform.ray_device_key:
            return super().get_node_and_physical_gpu_ids()
        import ray

        return ray.get_runtime_context().get_node_id(), [int(self._init_kwargs["rank"])]


@contextmanager
def _cpu_platform():
    """vLLM's Ray cluster setup asks the platform for its Ray resource name; CPU has none."""
    key = current_platform.ray_device_key
    if key:
        yield
        return
    current_platform.ray_device_key = CPU_KEY
    try:
        yield
    finally:
        current_platform.ray_device_key = key


@contextmanager
def _worker_class(cls):
    """``RayExecutorV2`` creates its actors from the module global ``RayWorkerProc``."""
    saved = ray_executor_v2.RayWorkerProc
    ray_executor_v2.RayWorkerProc = cls
    try:
        yield
    finally:
        ray_executor_v2.RayWorkerProc = saved


def connect(world_size: int, runtime_env: Optional[Dict[str, Any]] = None) -> Dict[str, bool]:
    """Make sure this process is connected to Ray; return what was started here (for :func:`disconnect`)."""
    import ray

    started = {"ray": False, "node": False}
    if ray.is_initialized():
        return started
    address = os.environ.get("RAY_ADDRESS")
    try:
        ray.init(address="auto", runtime_env=runtime_env)  # a cluster this machine belongs to
        return started
    except (ConnectionError, ValueError, RuntimeError):
        pass
    if address and not address.startswith("ray://"):  # join the remote cluster as a driver-only node
        subprocess.run([_ray_cli(), "start", f"--address={address}", "--num-cpus=0", "--num-gpus=0"],
                       check=True, capture_output=True)
        started["node"] = True
        ray.init(address="auto", runtime_env=runtime_env)
    else:
        ray.init(num_cpus=max(os.cpu_count() or 1, world_size), include_dashboard=False,
                 runtime_env=runtime_env, _system_config={"worker_niceness": 0})
    started["ray"] = True
    return started


def disconnect(started: Dict[str, bool]) -> None:
    """Stop what :func:`connect` started (a local cluster, or this machine's node of a remote one)."""
    if not (started.get("ray") or started.get("node")):
        return
    import ray

    ray.shutdown()
    if started.get("node"):
        subprocess.run([_ray_cli(), "stop"], check=False, capture_output=True)


def _ray_cli() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "ray")
    return here if os.path.exists(here) else "ray"


class NNsightRayExecutor(RayExecutorV2):
    """vLLM's Ray executor that connects Ray itself and runs on CPU (see the module docstring)."""

    nnsight_ray = True  # VLLM connects Ray in the user's process first (model.py)
    _nnsight_started: Dict[str, bool] = {}

    def _init_executor(self) -> None:
        self._nnsight_started = connect(self.parallel_config.world_size, self.parallel_config.ray_runtime_env)
        with _cpu_platform(), _worker_class(NNsightRayWorkerProc):
            super()._init_executor()

    @staticmethod
    def _get_actor_resource_kwargs() -> Dict[str, Any]:
        if current_platform.ray_device_key == CPU_KEY and current_platform.is_cpu():
            return {"num_gpus": 0}  # the placement group bundle holds the worker's CPU
        return RayExecutorV2._get_actor_resource_kwargs()

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            started, self._nnsight_started = self._nnsight_started, {}
            disconnect(started)
