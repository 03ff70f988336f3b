"""Counters of fast paths that fell back to their slow path.

Every shortcut of the toolchain (the ``ast`` frontend instead of libcst, parsing only the
with-statement instead of the whole file, the raw-bytecode look-ups instead of ``dis``, a hook
plan that names its modules instead of patching all of them, ...) declines in some cases. A
decline is correct, but slow; it must never be silent, or a regression that makes every trace
take the slow path would show only as a slower benchmark. So each fallback calls
:meth:`Fallbacks.note` with the fast path's name and why it declined:

* the counts are process-wide totals (``FALLBACKS.counts()``), read by the benchmark report
  and by tests; they grow by one per decline and never hold request data;
* a listener (``nnsight`` installs one that reports when ``CONFIG.APP.DEBUG`` is on) sees each
  decline with its reason as it happens.

Names are fixed (:data:`NAMES`): a misspelt name raises, so a counter cannot silently split.
"""
from __future__ import annotations

import threading
from typing import Callable, Dict, Optional

NAMES = {
    "frontend.lower": "the ast frontend declined a with-statement: libcst lowered it",
    "frontend.with_chunk": "parsing only the with-statement failed: the whole file was parsed",
    "frontend.accesses": "the ast access scan declined: libcst scanned the unit",
    "hookplan.dynamic": "the hook plan could not name its modules statically: every module is patched",
    "vllm.watch_all": "a vLLM request's hook plan could not name its modules: every module call is offered "
                      "to the step's interventions",
    "vllm.shared_saves": "a trace on an in-process vLLM engine saved something other than tensors and plain "
                         "containers: its saves were encoded and decoded as between processes",
    "generation.bytecode": "the raw-bytecode with-detection was unsure: the caller was disassembled",
    "skip.opcode_target": "an unusual `as` target: the with-body trap waited for a line event",
    "gate.features_table": "the frontend's features table is not importable: checked the IR header alone",
}


class Fallbacks:
    """Process-wide fallback counts per fast path, plus an optional listener."""

    def __init__(self) -> None:
        self._counts: Dict[str, int] = dict.fromkeys(NAMES, 0)
        self._lock = threading.Lock()
        self.listener: Optional[Callable[[str, str], None]] = None

    def note(self, name: str, reason: str = "") -> None:
        """Count one fallback of fast path ``name`` (one of :data:`NAMES`)."""
        if name not in self._counts:
            raise KeyError(f"unknown fast path {name!r}; add it to compiler.fallbacks.NAMES")
        with self._lock:
            self._counts[name] += 1
        listener = self.listener
        if listener is not None:
            try:
                listener(name, reason)
            except Exception:  # noqa: BLE001  (a reporting hook must not break the trace)
                pass

    def counts(self) -> Dict[str, int]:
        """A copy of the counts, every known fast path included (zeros too)."""
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            for name in self._counts:
                self._counts[name] = 0


def reason_of(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


FALLBACKS = Fallbacks()
