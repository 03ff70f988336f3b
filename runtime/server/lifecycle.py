"""Which models are in memory: loaded when a job first needs them, evicted under a memory budget.

A *unit* is what loads and unloads as a whole: a hosted model in the embedded
server, one replica actor's copy of a model on Ray. Its ``state``:

* ``COLD`` -- never loaded (``--lazy`` / ``--memory-budget`` / Ray: loads on its first job);
* ``LOADING`` -- a job is waiting for it (queued jobs wait too, they do not fail);
* ``READY`` -- in memory, taking jobs;
* ``EVICTED`` -- unloaded to make room for another; loads again when a job needs it;
* ``FAILED`` -- its last load raised (``error`` says why); the next job tries again.

:class:`MemoryBudget` keeps the units' loaded bytes within ``budget_bytes``: before a
load it evicts the least recently used idle units until the newcomer's expected size
fits, and waits (rather than fails) while the memory is held by units running jobs.
A unit larger than the whole budget fails its jobs with :class:`OverBudgetError`.
"""
import threading
import time
from typing import List, Optional

COLD, LOADING, READY, EVICTED, FAILED = "COLD", "LOADING", "READY", "EVICTED", "FAILED"


class OverBudgetError(Exception):
    """A model is larger than the server's whole memory budget."""


class Unit:
    """What :class:`MemoryBudget` manages; subclasses load and unload."""

    name = "?"
    state = COLD
    error: Optional[str] = None
    size_bytes = 0  # measured after the last load (0: never loaded)
    last_used = 0.0
    busy = 0  # jobs running on it now

    def estimate_bytes(self) -> int:
        """Bytes it will take once loaded (the last measured size, else a guess; 0: unknown)."""
        return self.size_bytes

    def load(self) -> int:
        """Load it; its size in bytes."""
        raise NotImplementedError

    def unload(self) -> None:
        raise NotImplementedError


class MemoryBudget:
    """Lazy loading and LRU eviction of units; thread-safe. ``budget_bytes=None``: no limit."""

    def __init__(self, budget_bytes: Optional[int] = None) -> None:
        self.budget_bytes = budget_bytes
        self._units: List[Unit] = []
        self._cond = threading.Condition()

    def register(self, unit: Unit) -> None:
        with self._cond:
            self._units.append(unit)

    def used_bytes(self) -> int:
        with self._cond:
            return self._used()

    def _used(self) -> int:
        return sum(u.size_bytes if u.state == READY else u.estimate_bytes()
                   for u in self._units if u.state in (READY, LOADING))

    def acquire(self, unit: Unit) -> None:
        """Make ``unit`` READY (loading it, evicting others to fit) and mark it busy.

        Raises what its load raised (the unit is then FAILED) or :class:`OverBudgetError`.
        """
        with self._cond:
            while True:
                if unit.state == READY:
                    unit.busy += 1
                    unit.last_used = time.monotonic()
                    return
                if unit.state == LOADING:  # another thread loads it: wait for that
                    self._cond.wait(1.0)
                    continue
                need = unit.estimate_bytes()
                if self.budget_bytes is not None and need > self.budget_bytes:
                    unit.state, unit.error = FAILED, "needs about %d bytes, more than the server's memory " \
                        "budget of %d bytes" % (need, self.budget_bytes)
                    raise OverBudgetError("model %r %s" % (unit.name, unit.error))
                if self._make_room(need, keep=unit):
                    break
                self._cond.wait(1.0)  # the memory is held by units running jobs: wait for one to end
            unit.state, unit.error = LOADING, None
        try:
            size = unit.load()
        except BaseException as error:
            with self._cond:
                unit.state, unit.error = FAILED, "%s: %s" % (type(error).__name__, error)
                self._cond.notify_all()
            raise
        with self._cond:
            unit.size_bytes, unit.state = size, READY
            unit.busy += 1
            unit.last_used = time.monotonic()
            self._make_room(0, keep=unit)  # it may be larger than guessed
            self._cond.notify_all()

    def release(self, unit: Unit) -> None:
        """A job on ``unit`` ended."""
        with self._cond:
            unit.busy = max(0, unit.busy - 1)
            unit.last_used = time.monotonic()
            self._cond.notify_all()

    def _make_room(self, need: int, keep: Unit) -> bool:
        """Evict idle READY units, least recently used first, until ``need`` more bytes fit."""
        if self.budget_bytes is None:
            return True
        while self._used() + need > self.budget_bytes:
            idle = [u for u in self._units if u is not keep and u.state == READY and not u.busy]
            if not idle:
                return False
            victim = min(idle, key=lambda u: u.last_used)
            try:
                victim.unload()
            finally:
                victim.state = EVICTED
        return True


def parse_bytes(text: str) -> int:
    """``"8GiB"``, ``"500MB"``, ``"1.5G"`` or a plain number of bytes."""
    units = {"": 1, "B": 1, "K": 1000, "KB": 1000, "M": 1000 ** 2, "MB": 1000 ** 2, "G": 1000 ** 3,
             "GB": 1000 ** 3, "T": 1000 ** 4, "TB": 1000 ** 4, "KIB": 1024, "MIB": 1024 ** 2,
             "GIB": 1024 ** 3, "TIB": 1024 ** 4}
    text = text.strip()
    number = text.rstrip("KMGTiBkmgtib ")
    unit = text[len(number):].strip().upper()
    if unit not in units:
        raise ValueError("%r: expected a size such as 8GiB, 500MB or a number of bytes" % text)
    try:
        value = float(number)
    except ValueError:
        raise ValueError("%r: expected a size such as 8GiB, 500MB or a number of bytes" % text) from None
    return int(value * units[unit])
