"""A bounded, thread-safe least-recently-used map: the caches of the toolchain share it.

Every process-wide cache here (lowered programs per call site, admitted requests, guarded builds,
the IR version each server accepts) must stay bounded in a process that runs for months, and be
safe from several threads. Torch-free (the client runs on CPython 3.9+).
"""
import threading
from collections import OrderedDict
from typing import Any, Generic, Hashable, Optional, TypeVar

V = TypeVar("V")


class BoundedLRU(Generic[V]):
    """At most ``bound`` entries; a hit makes an entry the newest, an insert past the bound drops
    the oldest."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self._entries: "OrderedDict[Hashable, V]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Optional[V]:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: Hashable, value: V) -> None:
        with self._lock:
            entries = self._entries
            entries[key] = value
            entries.move_to_end(key)
            while len(entries) > self.bound:
                entries.popitem(last=False)

    def pop(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            return self._entries.pop(key, default)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:  # (never the moment inside put between the insert and the eviction)
            return len(self._entries)
