"""The audit log: every refusal and every killed job, with the key, the job and the reason.

Each entry is one structured log line (``nnsight-server audit {json}`` on the server's log,
logger ``nnsight.server.audit``) and one row of the ``audit`` table in the data directory
(listed by ``nnsight-server audit``; deleted after ``--audit-ttl``, and the oldest beyond
``max_audit_rows``). A key is named by its id (``k_...``), or for a presented key that matches
none by a fingerprint (``fp_`` + 12 hex of its SHA-256): never by the secret itself.

Events:

* ``refused``: a request refused when it arrived (bad key, malformed, too large, unknown model...),
  when its program was loaded (the loader's guard, the language gate), or, in the untrusted tier,
  before it ran because its IR asks for what cannot cross the sandbox (a gradient session);
* ``limit``: a limit was hit (jobs in flight, queue full, result size, job wall time);
* ``integrity``: a job changed the hosted model (:mod:`runtime.integrity`);
* ``killed``: a running job was stopped (timeout, cancel, the sandbox killed it).
"""
import json
import logging
import time
from typing import Any, Dict, List, Optional

from .store import Store

REFUSED, LIMIT, INTEGRITY, KILLED = "refused", "limit", "integrity", "killed"
MAX_REASON_CHARS = 2000

log = logging.getLogger("nnsight.server.audit")

# The job error types (``module.QualName`` as the runner describes them) that are refusals.
REFUSAL_TYPES = {
    "runtime.loader.errors.ServerRefusal": REFUSED,
    "runtime.loader.errors.ServerImportError": REFUSED,
    "runtime.loader.errors.LoadError": REFUSED,
    "runtime.gate.LanguageLevelError": REFUSED,
    "runtime.sandbox.refusals.UntrustedTierRefusal": REFUSED,
    "runtime.integrity.IntegrityError": INTEGRITY,
}
# Job errors by their last name: a limit hit, or a job its sandbox process was killed for (a
# sandbox runner reports that as a job error, not as an interrupt).
ERROR_NAMES = {"ResultTooLargeError": LIMIT, "SandboxError": KILLED}


def record(store: Store, event: str, key_id: Optional[str], job_id: Optional[str], code: Optional[str],
           reason: str) -> None:
    """Log one audit entry and store it (a failure to store it is logged, never raised)."""
    reason = reason if len(reason) <= MAX_REASON_CHARS else reason[:MAX_REASON_CHARS] + "..."
    entry = {"event": event, "key": key_id, "job": job_id, "code": code, "reason": reason}
    log.warning("audit %s", json.dumps(entry, sort_keys=True))
    try:
        store.add_audit(event, key_id, job_id, code, reason)
    except Exception:  # noqa: BLE001 - the audit row is best effort once the line is logged
        log.exception("could not store the audit entry")


def job_failure(store: Store, key_id: Optional[str], job_id: str, info: Dict[str, Any]) -> None:
    """Audit a failed job when its error is a refusal, a limit hit, an integrity violation or a kill."""
    kind = str(info.get("type", ""))
    event = REFUSAL_TYPES.get(kind) or ERROR_NAMES.get(kind.rsplit(".", 1)[-1])
    if event is not None:
        record(store, event, key_id, job_id, kind.rsplit(".", 1)[-1], str(info.get("message", "")))


def format_rows(rows: List[Dict[str, Any]]) -> List[str]:
    """``nnsight-server audit``'s lines: time, event, key, job, code, reason."""
    lines = []
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["time"]))
        lines.append("%s  %-9s  %-15s  %-32s  %-20s  %s" % (
            when, row["event"], row["key_id"] or "-", row["job_id"] or "-", row["code"] or "-", row["reason"]))
    return lines


def parse_since(text: str, now: Optional[float] = None) -> float:
    """``--since``: ``30m``, ``2h``, ``7d`` ago, epoch seconds, or ``YYYY-MM-DD[THH:MM[:SS]]`` (local time)."""
    now = time.time() if now is None else now
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units:
        try:
            return now - float(text[:-1]) * units[text[-1]]
        except ValueError:
            pass
    try:
        return float(text)
    except ValueError:
        pass
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return time.mktime(time.strptime(text, fmt))
        except ValueError:
            continue
    raise ValueError("--since %r: give 30m, 2h, 7d, epoch seconds or YYYY-MM-DD[THH:MM]" % text)
