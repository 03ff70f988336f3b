"""Whether ``sys.modules`` changed since a cache was built, without comparing it at every request.

Two caches of the accept path describe the process's imports: the resolved refusal table
(:mod:`.refusal_table`) and the names of the user modules to hide (:mod:`.blocking`). Each was kept
valid by comparing ``sys.modules`` with a copy at every request: one C-level dict comparison, but it
visits every entry (~110 ns each: ~0.7 ms in a vLLM process with 6,000 modules, twice per job) and
writes to every module object's reference count (a forked sandbox child copies those pages).

A :class:`ModulesWatch` compares only when something may have changed:

* an import: a finder first on ``sys.meta_path`` counts every import the import system makes (a
  new module, a reload, a failed attempt: it never finds anything itself);
* a changed number of modules (an entry added or removed by hand);
* at most :data:`FULL_CHECK_S` since the last full comparison: the one change neither of those
  shows, an entry replaced by hand with another object (``sys.modules[name] = other``, outside an
  import), is seen within that time.

A full comparison that finds ``sys.modules`` unchanged (an import that failed, modules hidden and
put back) keeps the cache. Between full comparisons the answer costs two reads.
"""
import sys
import threading
import time
from typing import Any, Dict, Tuple

# The longest a hand-made in-place replacement of a ``sys.modules`` entry can go unseen.
FULL_CHECK_S = 1.0


class _ImportCounter:
    """A meta-path finder that finds nothing and counts the imports that asked it."""

    def __init__(self) -> None:
        self.imports = 0

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        self.imports += 1  # (two threads may count one: any increase is a change)
        return None


IMPORTS = _ImportCounter()
sys.meta_path.insert(0, IMPORTS)


class ModulesWatch:
    """One cache's view of ``sys.modules``: :meth:`changed` says whether it differs from the last
    call's (True on the first call)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._modules: Dict[str, Any] = {}
        self._token: Tuple[int, int] = (-1, -1)
        self._checked_at = float("-inf")
        self._trust_next = False
        self.full_checks = 0  # full comparisons made (a test and the benchmarks read it)

    def changed(self) -> bool:
        counting = any(finder is IMPORTS for finder in sys.meta_path)  # (by identity: no finder's __eq__)
        if not counting:  # someone rebuilt sys.meta_path: count again, compare this time
            sys.meta_path.insert(0, IMPORTS)
        token = (IMPORTS.imports, len(sys.modules))  # read before comparing: a later import shows next time
        now = time.monotonic()
        with self._lock:
            trusted, self._trust_next = self._trust_next, False
            if counting and token == self._token and (trusted or now - self._checked_at < FULL_CHECK_S):
                return False
            self._token, self._checked_at = token, now
            self.full_checks += 1
            if sys.modules == self._modules:
                return False
            self._modules = dict(sys.modules)
            return True

    def seal(self) -> None:
        """Trust the current view at the next call, whatever the time. Called by a process about to
        fork, right after its cache's own up-to-date check: the child may wait long before its first
        job, and a full comparison there would copy the pages of every module object it shares with
        its parent."""
        with self._lock:
            self._trust_next = True
