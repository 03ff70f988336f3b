"""What every job dispatcher of the server shares: the embedded worker (`worker.py`), the vLLM
dispatcher (`vllm_dispatcher.py`) and the Ray pool (`replicas/pool.py`) each take jobs from the
one store, and must fail them, announce queue positions and expire old data the same way."""
from typing import Any, Dict

from . import events
from .config import ServerConfig
from .events import EventHub
from .store import ERROR, Store


def fail(store: Store, hub: EventHub, job_id: str, info: Dict[str, Any]) -> None:
    """End a job with an error: stored first, then published."""
    store.finish(job_id, ERROR, info)
    hub.publish(job_id, events.ERROR, error=info)


def announce_positions(store: Store, hub: EventHub) -> None:
    """Tell every watched queued job its new place in the queue."""
    watched = hub.watched()
    if not watched:
        return
    positions = store.positions(watched)
    for job_id in watched:
        position = positions.get(job_id)
        if position is not None:
            hub.publish(job_id, events.QUEUED, position=position)


def expire_period(config: ServerConfig) -> float:
    """Seconds between two expiry passes: a tenth of the result TTL, between 1 s and a minute."""
    return min(60.0, max(1.0, config.result_ttl_s / 10))


def expire(store: Store, config: ServerConfig) -> None:
    """Delete results past their TTL and audit rows past theirs (or beyond the row bound)."""
    store.expire(config.result_ttl_s)
    store.expire_audit(config.audit_ttl_s, config.max_audit_rows)
