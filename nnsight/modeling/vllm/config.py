"""Engine arguments for a vLLM engine that runs nnsight interventions (CPU defaults, checks).

* ``worker_cls`` is nnsight's worker (:mod:`.worker`); a user-given one is refused.
* ``enforce_eager=True``: interventions patch module ``forward`` methods, which a
  compiled graph would bypass.
* No ``kv_cache_memory_bytes`` (and no ``VLLM_CPU_KVCACHE_SPACE``): a default sized
  from the model config — room for a few full-length requests, capped at a quarter of
  the free memory — instead of vLLM's CPU default that reserves most of the machine.
* ``dtype="float32"`` unless given: vLLM's CPU bfloat16 kernels died with SIGILL
  (illegal instruction) on a first batch of one one-token prompt on our CPU test
  machine (AMX advertised, not usable); float32 always worked.
* ``head_dim < 32``: refused up front with the reason (vLLM's CPU attention kernels
  support head sizes 32, 64, 80, ...), instead of failing deep inside the engine.
* ``tensor_parallel_size`` x ``pipeline_parallel_size`` > 1 without
  ``VLLM_CPU_OMP_THREADS_BIND`` in the environment: it is set to the allowed CPUs
  split evenly between the ranks (``"0|1"`` on two CPUs; ``"nobind"`` with fewer
  CPUs than ranks). vLLM's own default binds one rank per NUMA node and refuses to
  start on a machine with fewer nodes than ranks.
* ``distributed_executor_backend="ray"``: :class:`.executor_ray.NNsightRayExecutor`
  (vLLM's Ray executor that connects to / starts Ray itself and runs on CPU).
"""
import os
from typing import Any, Dict

WORKER_CLS = "nnsight.modeling.vllm.worker.NNsightCPUWorker"
MIN_KV_BYTES = 64 * 2 ** 20
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
_DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2}


def _hf_config(path: str, kwargs: Dict[str, Any]):
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(path, trust_remote_code=kwargs.get("trust_remote_code", False),
                                          revision=kwargs.get("revision"))
    except Exception:
        return None  # vLLM reports unreadable models itself


def _text_config(config):
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def head_dim(config) -> int:
    config = _text_config(config)
    dim = getattr(config, "head_dim", None)
    if not dim:
        hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
        heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None)
        dim = hidden // heads if hidden and heads else None
    return int(dim) if dim else 0


def kv_bytes_per_token(config, dtype: Any) -> int:
    """KV-cache bytes one token takes (keys and values of every layer)."""
    config = _text_config(config)
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None) or 1
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None) or 1
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    size = _DTYPE_BYTES.get(str(dtype).replace("torch.", ""), 2) if dtype not in (None, "auto") else 2
    return 2 * int(layers) * int(kv_heads) * max(head_dim(config), 1) * size


def _available_memory() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        return 8 * 2 ** 30


def engine_kwargs(path: str, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """``kwargs`` for ``vllm.LLM`` / ``AsyncEngineArgs`` with nnsight's worker and CPU defaults."""
    kwargs = dict(kwargs)
    given = kwargs.get("worker_cls")
    if given not in (None, "auto", WORKER_CLS):
        raise ValueError(
            f"VLLM runs interventions through its own worker class ({WORKER_CLS}); "
            f"worker_cls={given!r} can't be combined with it. Use `worker_extension_cls=` to add "
            f"methods to the worker instead.")
    kwargs["worker_cls"] = WORKER_CLS
    if kwargs.get("enforce_eager") is False:
        raise ValueError(
            "VLLM needs enforce_eager=True: interventions hook module forward calls, which a "
            "compiled graph bypasses. Remove enforce_eager=False.")
    kwargs["enforce_eager"] = True
    kwargs.setdefault("dtype", "float32")
    config = _hf_config(path, kwargs)
    if config is not None:
        dim = head_dim(config)
        if dim and dim not in CPU_HEAD_SIZES:
            raise ValueError(
                f"{path}: attention head size {dim} is not supported by vLLM's CPU attention "
                f"(supported: {', '.join(map(str, CPU_HEAD_SIZES))}). Use a model whose "
                f"hidden_size / num_attention_heads is one of these (for a tiny test model: "
                f"nnsight.testing.tiny_models builds ones with head_dim 32), or use LanguageModel.")
    if "kv_cache_memory_bytes" not in kwargs and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        kwargs["kv_cache_memory_bytes"] = default_kv_bytes(path, config, kwargs)
    world = int(kwargs.get("tensor_parallel_size") or 1) * int(kwargs.get("pipeline_parallel_size") or 1)
    if world > 1 and not os.environ.get("VLLM_CPU_OMP_THREADS_BIND"):
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cpu_binding(world)
    if kwargs.get("distributed_executor_backend") == "ray":
        from .executor_ray import NNsightRayExecutor

        kwargs["distributed_executor_backend"] = NNsightRayExecutor
    return kwargs


def cpu_binding(ranks: int) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND`` giving each rank an equal share of the allowed CPUs."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = list(range(os.cpu_count() or 1))
    if len(cpus) < ranks:
        return "nobind"
    share = len(cpus) // ranks
    groups = [cpus[i * share:(i + 1) * share] for i in range(ranks)]
    return "|".join(",".join(map(str, group)) for group in groups)


def default_kv_bytes(path: str, config, kwargs: Dict[str, Any]) -> int:
    """Room for four requests of the longest length, at least 64 MiB, at most 1/4 of free memory."""
    cap = _available_memory() // 4
    if config is None:
        return max(min(cap, 2 ** 30), MIN_KV_BYTES)
    length = kwargs.get("max_model_len") or getattr(_text_config(config), "max_position_embeddings", None) or 2048
    per_token = kv_bytes_per_token(config, kwargs.get("dtype"))
    need = per_token * int(length)
    if need > cap:
        raise ValueError(
            f"{path}: one request of {length} tokens needs {need / 2 ** 30:.2f} GiB of KV cache, "
            f"more than a quarter of the free memory ({cap / 2 ** 30:.2f} GiB). Pass a smaller "
            f"`max_model_len=` or an explicit `kv_cache_memory_bytes=`.")
    return int(min(max(4 * need, MIN_KV_BYTES), cap))
