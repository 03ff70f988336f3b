"""vLLM's engine-core process stops when the process that started it dies.

``AsyncLLM`` runs its engine core (the scheduler and the executor) in a child process, and with
vLLM's multiprocess executor the workers (here nnsight's) in children of that. vLLM gives the
workers a pipe that closes when the engine core dies, but gives the engine core nothing: when the
process that started it is killed (``kill -9`` of an ``nnsight-server``, an out-of-memory kill, a
crashed notebook kernel), the engine core lives on as an orphan, holding the model's weights and
KV cache and polling its sockets, and a restarted server finds that memory taken.

:func:`watch_parent` runs where nnsight's worker runs (the engine core itself, or one of its
worker processes): a daemon thread waits on a process file descriptor of the engine core's
parent (``os.pidfd_open``: readable once that process has exited, so the wait costs nothing),
then sends the engine core ``SIGTERM``, on which vLLM shuts it down cleanly (its workers follow
through their pipes), and ``SIGKILL`` if it still runs :data:`KILL_AFTER_S` later. Linux only
(elsewhere nothing is watched).
"""
import multiprocessing
import os
import select
import signal
import threading
import time
from typing import Optional, Tuple

# vLLM names its engine-core processes "EngineCore" (one engine) or "EngineCore_DP<i>" (data parallel)
ENGINE_CORE_NAME = "EngineCore"
KILL_AFTER_S = 30.0


def engine_core_and_client() -> Optional[Tuple[int, int]]:
    """``(engine core pid, pid of the process that started it)`` when this process is a vLLM engine
    core or one of its workers; None elsewhere (an in-process engine runs in the user's own process)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return None
    if multiprocessing.current_process().name.startswith(ENGINE_CORE_NAME):
        return os.getpid(), os.getppid()
    if parent.name.startswith(ENGINE_CORE_NAME) and parent.pid == os.getppid():
        client = parent_pid(parent.pid)
        return None if client is None else (parent.pid, client)
    return None


def parent_pid(pid: int) -> Optional[int]:
    """The parent of process ``pid`` (from ``/proc``), or None when it can't be read."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2:].split()[1])  # (the name may hold spaces and parentheses)
    except (OSError, ValueError, IndexError):
        return None


def watch_parent() -> bool:
    """Stop the engine core when the process that started it dies (see the module docstring).
    Returns whether a watch was started."""
    found = engine_core_and_client()
    if found is None or not hasattr(os, "pidfd_open"):
        return False
    core, client = found
    try:  # process fds, not pids: a pid reused by another process is never signalled
        core_fd = os.pidfd_open(core)
    except OSError:  # (no pidfd support in this kernel)
        return False
    try:
        client_fd: Optional[int] = os.pidfd_open(client)
    except ProcessLookupError:  # already gone: the engine core is an orphan now
        client_fd = None
    except OSError:
        os.close(core_fd)
        return False
    threading.Thread(target=_watch, args=(client_fd, core_fd, core, client), name="nnsight-parent-watch",
                     daemon=True).start()
    return True


def _watch(client_fd: Optional[int], core_fd: int, core: int, client: int) -> None:
    if client_fd is not None:
        if parent_pid(core) == client:  # (else it died, and the core was re-parented, before its fd opened)
            select.select([client_fd], [], [])
        os.close(client_fd)
    try:
        signal.pidfd_send_signal(core_fd, signal.SIGTERM)
        time.sleep(KILL_AFTER_S)  # (a daemon thread: gone with the process once it has exited)
        signal.pidfd_send_signal(core_fd, signal.SIGKILL)
    except OSError:  # it has exited
        pass
    finally:
        os.close(core_fd)
