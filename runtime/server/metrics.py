"""``GET /v1/metrics``: what an operator watches on a server that runs for months.

Every process-wide registry with its stated bound (:func:`runtime.registries.sizes`), the
process's resident memory, the queue, how many jobs this process has finished, and the size of
the data directory (stored jobs, blob files, the SQLite files). A flat line in each of these over
days is the sign that nothing leaks per request.
"""
import gc
import linecache
import os
from typing import Any, Dict

from runtime import registries


def rss_bytes() -> int:
    """The process's resident set size (Linux: ``/proc/self/statm``; elsewhere psutil, or 0)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        try:
            import psutil

            return int(psutil.Process().memory_info().rss)
        except Exception:  # noqa: BLE001 - no way to measure here: report 0 rather than fail
            return 0


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _blob_count(blob_dir: str) -> int:
    try:
        with os.scandir(blob_dir) as entries:
            return sum(1 for _ in entries)
    except OSError:
        return 0


def snapshot(service: Any, collect: bool = False) -> Dict[str, Any]:
    """The metrics of one server process (see ``docs/protocol.md``).

    ``collect``: run a full garbage collection first, so a weak registry counts only what is
    still reachable (finished jobs' programs hold reference cycles, which Python's collector
    frees in bursts: without it the weak sizes saw-tooth with the collector's schedule).
    """
    from .store import QUEUED, RUNNING

    if collect:
        gc.collect()
    store, config = service.store, service.config
    db = config.db_path
    return {
        "rss_bytes": rss_bytes(),
        "registries": {name: {"size": size, "bound": bound}
                       for name, (size, bound) in sorted(registries.sizes().items())},
        "over_bound": sorted(registries.over_bound()),
        "linecache_entries": len(linecache.cache),
        "queue": store.count(QUEUED),
        "running": store.count(RUNNING),
        "jobs_done": service.worker.jobs_done,
        "jobs_stored": store.count_all(),
        "event_subscribers": len(service.hub.watched()),
        "blob_files": _blob_count(store.blob_dir),
        "db_bytes": _file_size(db) + _file_size(db + "-wal"),
        "result_ttl_s": config.result_ttl_s,
        "runner": service.worker.runner.status(),
    }
