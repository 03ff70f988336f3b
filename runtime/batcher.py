"""The Batcher gives each invoke its own rows of a batched value, and writes them back.

All invokes of a trace run as one batched forward pass. A provider's value
(a module's output, its ``(args, kwargs)`` inputs, ...) is a structure of
tensors whose first dimension is the total batch size; an invoke with
``batch_group = (start, size)`` sees ``value.narrow(0, start, size)`` of every
such tensor, and an empty invoke (``batch_group = None``) sees everything.
"""
from typing import Any, Optional, Tuple

import torch

BatchGroup = Optional[Tuple[int, int]]


def _map(value: Any, fn) -> Any:
    """Apply ``fn`` to every tensor in a nested tuple/list/dict structure."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple):
        mapped = [_map(v, fn) for v in value]
        if hasattr(value, "_fields"):  # namedtuple
            return type(value)(*mapped)
        return tuple(mapped)
    if isinstance(value, list):
        return [_map(v, fn) for v in value]
    if isinstance(value, dict):
        mapped = {k: _map(v, fn) for k, v in value.items()}
        if type(value) is dict:
            return mapped
        try:  # ModelOutput and other dict subclasses keep their type
            return type(value)(**mapped)
        except Exception:
            return mapped
    return value


def _merge(current: Any, new: Any, start: int, size: int, total: int) -> Any:
    """``current`` with rows ``start:start+size`` replaced by ``new``."""
    if isinstance(current, torch.Tensor) and isinstance(new, torch.Tensor):
        if current.dim() > 0 and current.shape[0] == total and new.shape[0] == size:
            return torch.cat([current[:start], new, current[start + size:]], dim=0)
        return new
    if isinstance(current, (tuple, list)) and isinstance(new, (tuple, list)) and len(current) == len(new):
        merged = [_merge(c, n, start, size, total) for c, n in zip(current, new)]
        if hasattr(current, "_fields"):
            return type(current)(*merged)
        return type(current)(merged) if isinstance(current, list) else tuple(merged)
    if isinstance(current, dict) and isinstance(new, dict):
        out = dict(current)
        for k, n in new.items():
            out[k] = _merge(current[k], n, start, size, total) if k in current else n
        if type(current) is dict:
            return out
        try:
            return type(current)(**out)
        except Exception:
            return out
    return new


class Batcher:
    """Holds the value being provided, and narrows/swaps it per batch group."""

    __slots__ = ("current", "total")

    def __init__(self) -> None:
        self.current: Any = None
        self.total: int = 0  # rows in the batched input; 0 = unknown (no narrowing)

    def _whole(self, group: BatchGroup) -> bool:
        return group is None or (group[0] == 0 and group[1] == self.total) or self.total == 0

    def narrow(self, group: BatchGroup) -> Any:
        """The part of the current value that belongs to ``group``."""
        total = self.total
        if group is None or not total or (group[1] == total and group[0] == 0):  # = _whole(group)
            return self.current
        start, size = group

        def cut(t: torch.Tensor) -> torch.Tensor:
            if t.dim() > 0 and t.shape[0] == total:
                return t.narrow(0, start, size)
            return t

        return _map(self.current, cut)

    def swap(self, group: BatchGroup, value: Any) -> None:
        """Replace the part of the current value that belongs to ``group``."""
        if self._whole(group):
            self.current = value
            return
        self.current = _merge(self.current, value, group[0], group[1], self.total)
