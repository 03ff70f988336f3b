"""Tensor parallelism: interventions see complete tensors (gather -> intervene -> re-shard).

With ``tensor_parallel_size > 1`` every rank runs every request's intervention
(each rank receives the same requests), but some module values are only this
rank's part:

* a ``ColumnParallelLinear`` output (``gather_output=False``): this rank's slice
  of the last dimension. Merged layers concatenate one slice per sub-matrix
  (``MergedColumnParallelLinear``: ``[gate_r, up_r]``; ``QKVParallelLinear``:
  ``[q_r, k_r, v_r]``, KV heads replicated when there are fewer than ranks);
* a ``RowParallelLinear`` input (``input_is_parallel=True``): a slice of the last
  dimension;
* a ``RowParallelLinear`` output with ``reduce_results=False``: a partial sum.

:func:`shards` finds these providers. When an intervention reads or writes one,
the interleaver gathers the value first (:meth:`Shard.gather`: an all-gather, put
in the unsharded layout, or an all-reduce), so every rank runs the intervention on
the same complete tensor, then puts this rank's part of the (maybe modified)
value back (:meth:`Shard.scatter`: the slice, or the sum divided by the TP size).
Providers nobody asks for are never gathered. The gather is a collective: it
relies on every rank's interventions asking for the same values, which holds
because they run the same code on identical gathered values.
"""
from typing import Any, Callable, Dict, Iterable, List, Tuple

import torch

OUTPUT, INPUT = ".output", ".input"


def _group():
    from vllm.distributed import get_tp_group

    return get_tp_group()


class Shard:
    """How one provider's tensor is split on this rank, and how to undo / redo it.

    ``where``: ``"output"`` (a tensor, or a ``(tensor, bias)`` tuple) or ``"input"``
    (``(args, kwargs)`` of a call whose first argument is the tensor).
    """

    def __init__(self, where: str, rank: int, size: int) -> None:
        self.where = where
        self.rank = rank
        self.size = size

    def gather(self, value: Any) -> Any:
        return _apply(value, self.where, self._gather)

    def scatter(self, value: Any) -> Any:
        return _apply(value, self.where, self._scatter)

    def _gather(self, local: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _scatter(self, full: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class SplitShard(Shard):
    """Sharded on the last dimension; ``parts`` sub-matrices each split over the ranks.

    ``parts``: this rank's width of each sub-matrix (vLLM's ``output_partition_sizes``);
    ``replicas``: how many consecutive ranks hold the same slice of each (KV heads
    replicated when ``tp_size > num_kv_heads``).
    """

    def __init__(self, where: str, rank: int, size: int, parts: List[int], replicas: List[int]) -> None:
        super().__init__(where, rank, size)
        self.parts = parts
        self.replicas = replicas

    def _gather(self, local: torch.Tensor) -> torch.Tensor:
        gathered = _group().all_gather(local.contiguous(), dim=-1)
        if len(self.parts) == 1 and self.replicas[0] == 1:
            return gathered
        ranks = [chunk.split(self.parts, dim=-1) for chunk in gathered.split(sum(self.parts), dim=-1)]
        return torch.cat([ranks[r][i] for i, rep in enumerate(self.replicas)
                          for r in range(0, self.size, rep)], dim=-1)

    def _scatter(self, full: torch.Tensor) -> torch.Tensor:
        widths = [w * self.size // rep for w, rep in zip(self.parts, self.replicas)]
        if full.shape[-1] != sum(widths):
            raise ValueError(
                f"under tensor parallelism this value must keep its full width {sum(widths)} on its "
                f"last dimension (it is split over {self.size} ranks), got shape {tuple(full.shape)}")
        subs = full.split(widths, dim=-1)
        return torch.cat([sub.narrow(-1, (self.rank // rep) * w, w)
                          for sub, w, rep in zip(subs, self.parts, self.replicas)], dim=-1).contiguous()


class SumShard(Shard):
    """A partial sum over the ranks (``RowParallelLinear`` with ``reduce_results=False``)."""

    def _gather(self, local: torch.Tensor) -> torch.Tensor:
        return _group().all_reduce(local.clone())

    def _scatter(self, full: torch.Tensor) -> torch.Tensor:
        return full / self.size  # the later reduction adds the ranks' parts back up


def _apply(value: Any, where: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``value`` with its sharded tensor replaced by ``fn(tensor)``."""
    if where == "input":
        args, kwargs = value
        if args and isinstance(args[0], torch.Tensor):
            return (fn(args[0]),) + tuple(args[1:]), kwargs
        if isinstance(kwargs.get("input_"), torch.Tensor):
            return args, {**kwargs, "input_": fn(kwargs["input_"])}
        return value
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple) and value and isinstance(value[0], torch.Tensor):
        return (fn(value[0]),) + value[1:]
    return value


def shards(modules: Iterable[Tuple[str, torch.nn.Module]]) -> Dict[str, Shard]:
    """Provider key (``path.output`` / ``path.input``) -> :class:`Shard`, for this rank's model."""
    from vllm.model_executor.layers.linear import ColumnParallelLinear, QKVParallelLinear, RowParallelLinear

    found: Dict[str, Shard] = {}
    for path, module in modules:
        size = int(getattr(module, "tp_size", 1) or 1)
        if size == 1:
            continue
        rank = int(module.tp_rank)
        if isinstance(module, ColumnParallelLinear) and not module.gather_output:
            found[path + OUTPUT] = _column(module, rank, size, isinstance(module, QKVParallelLinear))
        elif isinstance(module, RowParallelLinear):
            if module.input_is_parallel:
                found[path + INPUT] = SplitShard("input", rank, size, [int(module.input_size_per_partition)], [1])
            if not module.reduce_results:
                found[path + OUTPUT] = SumShard("output", rank, size)
    return found


def _column(module: torch.nn.Module, rank: int, size: int, qkv: bool) -> SplitShard:
    parts = [int(p) for p in getattr(module, "output_partition_sizes", None) or [module.output_size_per_partition]]
    replicas = [1] * len(parts)
    if qkv and len(parts) >= 3:  # [q, k, v]: K and V are replicated when kv heads < ranks
        replicas[1] = replicas[2] = int(getattr(module, "num_kv_head_replicas", 1) or 1)
    return SplitShard("output", rank, size, parts, replicas)

