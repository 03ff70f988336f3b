"""A vLLM engine core stops when the process that started it is killed.

vLLM leaves an engine core whose parent died running (with the weights and the KV cache);
nnsight's worker watches that parent (``nnsight/modeling/vllm/parent_watch.py``). A real
``nnsight-server --engine vllm`` is killed with SIGKILL, with the engine's worker inside the
engine core and in a process of its own: every process below the server must be gone.
"""
import os
import signal
import subprocess
import sys
import time

import pytest

from nnsight.modeling.vllm import parent_watch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "server"))
from serverproc import ServerProcess  # noqa: E402 - tests/server's helper, imported by path

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

GONE_WITHIN_S = 20


def _children(pid):
    return [int(name) for name in os.listdir("/proc")
            if name.isdigit() and parent_watch.parent_pid(int(name)) == pid]


def _descendants(pid):
    found, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def _running(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:].split()[0] != b"Z"  # (a zombie has exited)


def _still_running_after(pids, seconds):
    """The pids of ``pids`` still running once all have exited or ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(map(_running, pids)):
        time.sleep(0.1)
    return [pid for pid in pids if _running(pid)]


def test_this_process_is_not_an_engine_core():
    assert parent_watch.engine_core_and_client() is None
    assert parent_watch.watch_parent() is False  # an in-process engine never stops the user's process


def test_parent_pid_reads_a_processs_parent():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert parent_watch.parent_pid(child.pid) == os.getpid()
    finally:
        child.kill()
        child.wait()
    assert parent_watch.parent_pid(2 ** 22 + 12345) is None  # no such process


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="process file descriptors are Linux-only")
def test_the_watch_stops_the_core_only_once_its_parent_has_exited(monkeypatch):
    """Without an engine: a "client" process whose child plays the engine core."""
    import threading

    monkeypatch.setattr(parent_watch, "KILL_AFTER_S", 0.5)
    client = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "core = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(core.pid, flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE)
    core = int(client.stdout.readline())
    try:
        watch = threading.Thread(target=parent_watch._watch, daemon=True,
                                 args=(os.pidfd_open(client.pid), os.pidfd_open(core), core, client.pid))
        watch.start()
        time.sleep(1.0)
        assert _running(core), "the engine core was stopped while its parent still ran"
        client.kill()
        client.wait()
        assert not _still_running_after([core], GONE_WITHIN_S), "the engine core outlived its parent"
        watch.join(5)
        assert not watch.is_alive()
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        if _running(core):
            os.kill(core, signal.SIGKILL)


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="process file descriptors are Linux-only")
@pytest.mark.parametrize("worker_process", [False, True], ids=["worker-in-engine-core", "worker-process"])
def test_a_killed_servers_engine_processes_stop(tmp_path, llama_path, monkeypatch, worker_process):
    # "1": vLLM's multiprocess executor, the worker in a child of the engine core
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1" if worker_process else "0")
    server = ServerProcess(str(tmp_path), ["llama=%s" % llama_path], "--no-auth", "--engine", "vllm",
                           "--engine-arg", "max_model_len=256")
    server.start(timeout=300)
    below = []
    try:
        below = _descendants(server.proc.pid)
        assert below, "the server started no engine process"
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(30)
        left = _still_running_after(below, GONE_WITHIN_S)
        assert not left, "engine processes outlived their server: %s" % left
    finally:  # (whatever the outcome: no process left behind by this test)
        if server.proc.poll() is None:
            below = _descendants(server.proc.pid)
        for pid in below:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        server.stop()
