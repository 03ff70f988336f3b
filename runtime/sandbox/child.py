"""A sandbox child's life: confine itself, run one job through the accept path, report, exit.

The job runs exactly as in the model process (:mod:`runtime.accept`: decode,
verify, gate, load, run, encode), against the hosted model's stand-in
(:mod:`.standin`), so every feature of the runtime behaves the same; what the
job prints and its ``tracer.local()`` blocks go to the model process as frames.
"""
import contextlib
import os
import socket
from typing import Any, Dict, Optional

from .channel import DONE, DONE_HOSTED, FAILED, JOB, LOG, READY, Channel
from .confine import Limits, confine, job_limits


def main(sock: socket.socket, arena_fd: int, standins: Dict[str, Any], scratch: str, limits: Limits,
         required: Optional[list] = None, network_namespace: Optional[str] = None) -> None:
    """Run in the forked child; never returns (``os._exit``)."""
    code = 0
    try:
        from .arena import Arena

        arena = Arena(arena_fd, os.fstat(arena_fd).st_size, writer=1)  # mapped before the address-space limit
        os.close(arena_fd)
        confine(sock.fileno(), scratch, limits, required, network_namespace)
        import torch

        torch.set_num_threads(1)
        channel = Channel(sock)
        channel.send(READY)
        _job(channel, standins, arena)
    except BaseException:  # noqa: B902 - nothing more can be reported; the model process sees the channel close
        code = 70
    finally:
        os._exit(code)


def spare(link: socket.socket, standins: Dict[str, Any], scratch: str, limits: Limits,
          required: Optional[list] = None, network_namespace: Optional[str] = None) -> None:
    """A child forked ahead of its job: confined, then given its job's channel and arena.

    The template keeps one spare: a job then starts without waiting for a fork and its
    confinement. The job arrives as two file descriptors (SCM_RIGHTS) on ``link``. Never returns.
    """
    code = 0
    try:
        from .confine import vm_size

        mapped = vm_size()
        confine(link.fileno(), scratch, limits, required, network_namespace, defer_job_limits=True)
        import torch

        torch.set_num_threads(1)
        _message, fds, _flags, _addr = socket.recv_fds(link, 16, 2)
        if len(fds) != 2:
            return
        channel_fd, arena_fd = fds
        from .arena import Arena

        size = os.fstat(arena_fd).st_size
        arena = Arena(arena_fd, size, writer=1)
        os.close(arena_fd)
        link.close()
        job_limits(limits, mapped + size + (64 << 20))  # (+ what the interpreter mapped meanwhile)
        channel = Channel(socket.socket(fileno=channel_fd))
        channel.send(READY)
        _job(channel, standins, arena)
    except BaseException:  # noqa: B902 - the model process sees the channel close
        code = 70
    finally:
        os._exit(code)


def _job(channel: Channel, standins: Dict[str, Any], arena: Any = None) -> None:
    from nnsight.tracing.remote import model_for_key, server_tracer
    from runtime import accept
    from runtime.server.runner import describe

    from compiler.ir.request import encode_result

    from .standin import SandboxLink
    from .values import hosted_reference

    frame = channel.recv()
    if frame[0] != JOB or len(frame) != 3:
        return
    _, name, payload = frame
    standin = standins[name]
    link = SandboxLink(channel, standin, arena)
    standin.link = link
    files: set = set()
    handles: list = []

    def hosted(obj: Any) -> Any:
        ref = hosted_reference(obj)
        if ref is not None:
            handles.append(ref)
        return ref

    try:
        with contextlib.ExitStack() as stack:

            def find_model(key: str) -> Any:
                return stack.enter_context(model_for_key(standin.model, key))

            with accept.accepted(payload, find_model, lambda line: channel.send(LOG, line)) as job:
                files = job.files()
                tree = accept.saved_tree(job, accept.run(job, server_tracer, link.local), objref=hosted)
                result = None if handles else encode_result(tree)
    except BaseException as error:  # noqa: B902 - the user's error, reported to the client
        channel.send(FAILED, describe(error, files))
        return
    if result is None:  # it saved objects of the model process: the model process fills them in
        channel.send(DONE_HOSTED, tree)
    else:
        channel.send(DONE, result)
