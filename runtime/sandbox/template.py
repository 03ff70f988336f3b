"""The warm template: a single-threaded process that forks one sandbox child per job.

The server process is multi-threaded (uvicorn, the worker), so it never forks
itself. At start-up it launches this process (``python -m runtime.sandbox.template``),
which imports torch, the compiler and the runtime once, builds each hosted
model's stand-in (module tree on the meta device and tokenizer, no weights:
:mod:`.standin`), confines a probe child to learn which kernel layers work, and
reports them. Then, for each job, the server passes it one end of a fresh
socket pair (SCM_RIGHTS over a SOCK_SEQPACKET control socket); the template
forks, the child confines itself and runs the job on that socket
(:mod:`.child`). A fork costs milliseconds: nothing is imported again.

Children stay unreaped until the server asks (``reap``), so a child's pid can't
be reused while the server may still kill its process group.
"""
import argparse
import gc
import os
import shutil
import socket
import sys
import tempfile
from typing import Any, Dict

CONTROL_MAX = 65536


def _send(sock: socket.socket, *message: Any) -> None:
    from compiler.ir import framing

    sock.send(framing.pack(list(message)))


def _recv(sock: socket.socket):
    from compiler.ir import framing

    data, fds, _flags, _addr = socket.recv_fds(sock, CONTROL_MAX, 2)
    if not data:
        return None, fds
    return framing.unpack(data, "template control message"), fds


def _native_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return -1


def _build(specs) -> Dict[str, Any]:
    import torch

    from nnsight import LanguageModel

    from .standin import StandIn

    torch.set_num_threads(1)
    standins = {}
    for spec in specs:
        name, _, source = spec.partition("=")
        standins[name] = StandIn(LanguageModel(source))
    return standins


def _warm(standins: Dict[str, Any]) -> None:
    """Import what a job needs lazily, so a child never pays for it (and never needs the files)."""
    from . import seccomp

    seccomp.library()
    import compiler.ir.request  # noqa: F401
    import nnsight.tracing.remote  # noqa: F401
    import runtime.accept  # noqa: F401
    import runtime.loader  # noqa: F401
    import runtime.server.runner  # noqa: F401

    from . import child  # noqa: F401  (and everything a child imports: sys.modules must not change after this)

    from .warmup import run_warmup_job

    for _ in range(2):  # the second run finds every lazy import done (the loader's snapshot of sys.modules holds)
        for standin in standins.values():
            run_warmup_job(standin.model)
    # Children share the template's memory copy-on-write: the collector must not touch (and so
    # copy) every page of the template's objects in each child.
    gc.collect()
    gc.freeze()


def _fork(channel_fd: int, arena_fd: int, standins, scratch_root: str, limits, required, netns):
    from runtime.loader.blocking import seal_snapshot

    scratch = tempfile.mkdtemp(prefix="job-", dir=scratch_root)
    seal_snapshot()  # the child's first job need not compare (and so copy) every module object
    pid = os.fork()
    if pid == 0:
        from . import child

        child.main(socket.socket(fileno=channel_fd), arena_fd, standins, scratch, limits, required, netns)
    os.close(channel_fd)
    os.close(arena_fd)
    return pid, scratch


def _spawn_spare(standins, scratch_root: str, limits, required, netns):
    """Fork the next job's child now: ``(pid, the template's end of its link, scratch)``."""
    from runtime.loader.blocking import seal_snapshot

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    scratch = tempfile.mkdtemp(prefix="job-", dir=scratch_root)
    seal_snapshot()
    pid = os.fork()
    if pid == 0:
        from . import child

        ours.close()
        child.spare(theirs, standins, scratch, limits, required, netns)
    theirs.close()
    return pid, ours, scratch


def _hand_over(spare, fds) -> bool:
    """Give the spare its job (channel and arena); False if it is gone (then it is cleaned up)."""
    pid, link, scratch = spare
    try:
        socket.send_fds(link, [b"job"], fds)
        return True
    except OSError:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        shutil.rmtree(scratch, ignore_errors=True)
        return False
    finally:
        link.close()


def _probe(standins, scratch_root: str, limits, required, netns) -> Dict[str, str]:
    """Confine a child and let it report which layers took effect."""
    from .channel import Channel
    from .confine import confine

    parent, kid = socket.socketpair()
    scratch = tempfile.mkdtemp(prefix="probe-", dir=scratch_root)
    pid = os.fork()
    if pid == 0:
        parent.close()
        try:
            layers = confine(kid.fileno(), scratch, limits, None, netns)
            Channel(kid).send("layers", layers)
        finally:
            os._exit(0)
    kid.close()
    try:
        frame = Channel(parent).recv()
        layers = frame[1]
    except Exception as error:  # noqa: BLE001
        layers = {"probe": "FAILED: %s" % error}
    os.waitpid(pid, 0)
    parent.close()
    shutil.rmtree(scratch, ignore_errors=True)
    return layers


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.sandbox.template")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--model", action="append", default=[], metavar="NAME=SOURCE")
    parser.add_argument("--scratch-root", required=True)
    parser.add_argument("--memory-bytes", type=int, required=True)
    parser.add_argument("--cpu-seconds", type=int, required=True)
    parser.add_argument("--require", action="append", default=[])
    args = parser.parse_args(argv)
    control = socket.socket(fileno=args.control_fd)
    from .confine import Limits

    limits = Limits(memory_bytes=args.memory_bytes, cpu_seconds=args.cpu_seconds)
    os.makedirs(args.scratch_root, mode=0o700, exist_ok=True)
    standins = _build(args.model)
    _warm(standins)
    from .confine import enter_network_namespace

    netns_error = enter_network_namespace()  # once, for every child (the template needs no network now)
    netns = None if netns_error else "own network namespace (no interfaces), entered by the template"
    layers = _probe(standins, args.scratch_root, limits, args.require, netns)
    _send(control, "ready", layers, _native_threads())
    scratches: Dict[int, str] = {}
    spare = _spawn_spare(standins, args.scratch_root, limits, args.require, netns)
    while True:
        message, fds = _recv(control)
        if message is None:  # the server went away: so do its jobs (no interpreter teardown needed)
            os._exit(0)
        kind = message[0]
        if kind == "fork" and len(fds) == 2:
            if spare is not None and _hand_over(spare, fds):
                pid, scratches_dir = spare[0], spare[2]
                for fd in fds:
                    os.close(fd)
            else:  # no spare ready: fork one for this job now
                pid, scratches_dir = _fork(fds[0], fds[1], standins, args.scratch_root, limits, args.require, netns)
            scratches[pid] = scratches_dir
            _send(control, "forked", pid, _native_threads())
            spare = _spawn_spare(standins, args.scratch_root, limits, args.require, netns)
        elif kind == "reap" and len(message) == 2 and type(message[1]) is int and message[1] in scratches:
            pid = message[1]
            _, status = os.waitpid(pid, 0)
            shutil.rmtree(scratches.pop(pid), ignore_errors=True)
            _send(control, "reaped", pid, status)
        else:
            for fd in fds:
                os.close(fd)
            _send(control, "error", "unknown control message")


if __name__ == "__main__":
    sys.exit(main())
