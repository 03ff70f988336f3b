"""The Batcher gives each invoke its own rows of a batched value, and writes them back.

All invokes of a trace run as one batched forward pass. A provider's value
(a module's output, its ``(args, kwargs)`` inputs, ...) is a structure of
tensors whose first dimension is the total batch size; an invoke with
``batch_group = (start, size)`` sees ``value.narrow(0, start, size)`` of every
such tensor, and an empty invoke (``batch_group = None``) sees everything.
"""
import copy
import dataclasses
from collections import defaultdict
from typing import Any, Dict, Optional, Tuple

import torch

BatchGroup = Optional[Tuple[int, int]]


def _map(value: Any, fn) -> Any:
    """Apply ``fn`` to every tensor in a nested tuple/list/dict/dataclass structure.

    Containers keep their type: namedtuples, dict subclasses (``ModelOutput``, diffusers'
    ``BaseOutput``, ``OrderedDict``) and dataclasses are rebuilt by :func:`_rebuild`.
    """
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
        return _rebuild(value, mapped)
    if hasattr(type(value), "__dataclass_fields__"):  # a dataclass instance (not a dict)
        changed = {}
        for f in dataclasses.fields(value):
            old = getattr(value, f.name, _UNSET)
            if old is not _UNSET:
                new = _map(old, fn)
                if new is not old:
                    changed[f.name] = new
        return _rebuild(value, changed) if changed else value
    return value


_UNSET = object()


def _rebuild(value: Any, items: Dict[Any, Any]) -> Any:
    """A copy of ``value`` (a dict subclass or a dataclass) with ``items`` set, of the same type.

    Nothing is constructed through ``__init__``: a ``ModelOutput`` / ``BaseOutput`` whose ``None``
    fields have no defaults can't be rebuilt as ``type(value)(**items)``. A dict subclass gets a
    fresh instance with ``value``'s attributes and then the items, set through its own
    ``__setitem__`` (so ``ModelOutput``'s key and attribute views agree, keys keep their order and
    ``None`` fields stay attributes only); a dataclass gets a fresh instance with ``value``'s
    attributes and the changed fields set (frozen ones too). What can't be rebuilt that way falls
    back to ``type(value)(**items)`` / ``dataclasses.replace``, then to a plain dict / the
    unchanged value.
    """
    cls = type(value)
    try:
        state = getattr(value, "__dict__", None)
        if state is None:  # __slots__: let copy handle the layout
            new = copy.copy(value)
        else:
            new = cls.__new__(cls)
            new.__dict__.update(state)
        if isinstance(value, dict):
            if isinstance(value, defaultdict):
                new.default_factory = value.default_factory
            for key, item in items.items():
                new[key] = item
        else:
            for name, item in items.items():
                object.__setattr__(new, name, item)  # frozen dataclasses too
        return new
    except Exception:
        pass
    try:
        return cls(**items) if isinstance(value, dict) else dataclasses.replace(value, **items)
    except Exception:
        return dict(items) if isinstance(value, dict) else value


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
        return out if type(current) is dict else _rebuild(current, out)
    return new


class Batcher:
    """Holds the value being provided, and narrows/swaps it per batch group."""

    __slots__ = ("current", "total", "rows")

    def __init__(self) -> None:
        self.current: Any = None
        self.total: int = 0  # rows in the batched input; 0 = unknown (no narrowing)
        # While one value is handed to many one-row groups (a vLLM step's requests): None, or
        # [value, its shape, its rows as views] -- one split for all instead of a narrow each
        # (~3.5 us each). Set and cleared by the caller around that hand-out, so it never keeps a
        # value alive past it.
        self.rows: Optional[list] = None

    def _whole(self, group: BatchGroup) -> bool:
        return group is None or (group[0] == 0 and group[1] == self.total) or self.total == 0

    def narrow(self, group: BatchGroup) -> Any:
        """The part of the current value that belongs to ``group``."""
        total = self.total
        if group is None or not total or (group[1] == total and group[0] == 0):  # = _whole(group)
            return self.current
        start, size = group
        rows = self.rows
        if rows is not None and size == 1:
            current = self.current
            if type(current) is torch.Tensor and current.dim() > 0 and current.shape[0] == total:
                if rows[0] is not current or rows[1] != current.shape:  # (a swap, or a resize_)
                    rows[:] = [current, current.shape, current.split(1)]
                return rows[2][start]

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
