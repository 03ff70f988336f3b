"""The untrusted tier's job runner: the user's code in a disposable sandbox process.

:class:`SandboxRunner` implements :class:`runtime.server.runner.JobRunner`: per job
it takes a fresh child from the warm template (:mod:`.warm`), sends it the request
bytes and serves its module calls against the hosted model (:mod:`.host`) until
the child reports the result (a job its IR shows cannot work across the boundary is refused
before: :mod:`.refusals`). At the wall-clock limit (or on cancel) the child's
process group is killed: the model process, waiting on the channel, sees it close,
removes its hooks and the worker moves on. :class:`TieredRunner` picks the
in-process or the sandbox runner per job (:func:`.selection.uses_sandbox`).
"""
import os
import queue
import signal
import threading
import time
from typing import Any, Dict, Optional

from compiler.ir.limits import DecodeLimits
from runtime.loader.hosted_memory import hosted_storages
from runtime.server import interrupts
from runtime.server.runner import (IntactWatch, JobCancelled, JobFailed, JobInterrupted, JobRunner, JobTimeout,
                                   LogLine)

from . import arena
from .channel import JOB, Channel, ChannelClosed, ChannelError
from .host import ChildFailed, HostSession, ProtocolViolation
from .refusals import refusal_of_request
from .selection import uses_sandbox
from .values import BoundaryError
from .warm import SandboxUnavailable, WarmTemplate


class SandboxRunner(JobRunner):
    """Runs each job's code in a fresh confined child; the model's forward pass stays here."""

    def __init__(self, template: WarmTemplate, hosted_names: Dict[int, str],
                 limits: Optional[DecodeLimits] = None, arena_bytes: int = 1 << 30) -> None:
        self.template = template
        self.arena_bytes = arena_bytes  # per job, sparse: pages exist once written
        self.hosted_names = hosted_names  # id(hosted model object) -> its name in the template
        self.limits = limits or DecodeLimits()
        self._lock = threading.Lock()
        self._pid: Optional[int] = None
        self._stopped: Optional[type] = None  # why this runner killed the running child
        self._deadline: Optional[float] = None
        self._thread: Optional[int] = None  # the worker thread serving the running child
        self._sent = False  # an interrupt was sent to that thread (drained when the job ends)
        self._changed = threading.Condition(self._lock)
        self._watch_intact = IntactWatch()
        self.started_s = 0.0  # the last job's sandbox start: fork request to a confined child (metrics)
        self._watchdog = threading.Thread(target=self._watch, name="nnsight-sandbox-watchdog", daemon=True)
        self._watchdog.start()
        # Killed children are reaped off the job's path: the result goes out without waiting for
        # the child's address space to be torn down.
        self._dead: "queue.Queue[int]" = queue.Queue()
        self._reaper = threading.Thread(target=self._reap_loop, name="nnsight-sandbox-reaper", daemon=True)
        self._reaper.start()

    def _reap_loop(self) -> None:
        while True:
            pid = self._dead.get()
            try:
                self.template.reap(pid)
            except Exception:  # noqa: BLE001 - the template is gone: nothing left to reap
                pass

    def run(self, payload: bytes, model: Any, log: LogLine, time_limit_s: float,
            local: Optional[Any] = None) -> bytes:
        """The job in a sandbox child; the hosted model checked intact afterwards, as in the trusted
        tier (the child has no weights, but the model process ran hooks and calls for it).

        A program whose IR asks for what cannot cross the boundary (a gradient session through
        the hosted model) is refused first, before a child starts (:mod:`.refusals`)."""
        refused = refusal_of_request(payload)  # (admitted on arrival: a lookup)
        if refused is not None:
            raise JobFailed(refused)
        before = self._watch_intact.before(model)
        try:
            result = self._run(payload, model, log, time_limit_s, local)
        except BaseException as error:
            self._watch_intact.after(before, error)
            raise
        self._watch_intact.after(before, None)
        return result

    def _run(self, payload: bytes, model: Any, log: LogLine, time_limit_s: float, local: Optional[Any]) -> bytes:
        name = self.hosted_names.get(id(model))
        if name is None:
            raise JobFailed(_error("SandboxError", "this model is not available to the sandbox", ""))
        t0 = time.perf_counter()
        arena_fd = arena.create(self.arena_bytes)
        try:
            pid, sock = self.template.fork(arena_fd)
            shared = arena.Arena(arena_fd, self.arena_bytes, writer=0)
        except SandboxUnavailable as error:
            raise JobFailed(_error("SandboxUnavailableError", str(error),
                                   "the server's log says why the sandbox did not start; ask the operator"))
        finally:
            os.close(arena_fd)
        channel = Channel(sock, self.limits)
        with self._lock:
            self._pid, self._stopped, self._thread = pid, None, threading.get_ident()
            self._deadline = time.monotonic() + time_limit_s
            self._changed.notify()
        try:
            channel.send(JOB, name, payload)  # buffered while the child confines itself
            module = model._module
            session = HostSession(channel, module, dict(module.named_modules()), set(hosted_storages(module)),
                                  log, local, self.limits, shared)
            session.ready()
            self.started_s = time.perf_counter() - t0
            return session.serve()
        except ChildFailed as failure:
            raise JobFailed(failure.info) from None
        except JobInterrupted:
            raise (self._stop_child() or JobCancelled)() from None
        except ChannelClosed as error:  # the child died on its own (a limit, a crash): say why
            stopped = self._stop_child()
            if stopped is not None:
                raise stopped() from None
            with self._lock:
                self._pid = None  # reaped here, not by _settle
            _kill_group(pid)
            raise JobFailed(_ended(error, self.template.reap(pid))) from None
        except (ChannelError, ProtocolViolation, BoundaryError) as error:
            stopped = self._stop_child()
            if stopped is not None:
                raise stopped() from None
            raise JobFailed(_error("SandboxProtocolError", "the job's sandbox process broke the protocol: %s" % error,
                                   "the job's code tried to work around the sandbox; it was stopped")) from None
        finally:
            self._settle()
            channel.close()
            shared.close()

    def _settle(self) -> None:
        """No interrupt can reach this thread any more (one already pending is drained); the job's
        child, if still here, is killed and handed to the reaper."""
        while True:
            try:
                with self._lock:
                    if self._pid is not None:  # (interrupted here, the retry puts it twice: harmless)
                        _kill_group(self._pid)
                        self._dead.put(self._pid)
                    self._pid, self._deadline, self._thread = None, None, None
                    self._changed.notify()
                    sent, self._sent = self._sent, False
                if sent:
                    interrupts.drain()
                return
            except JobInterrupted:  # it landed here: clear again
                continue

    def settle(self) -> None:
        self._settle()

    def _stop_child(self) -> Optional[type]:
        with self._lock:
            return self._stopped

    def _watch(self) -> None:
        with self._lock:
            while True:
                if self._pid is not None and self._deadline is not None:
                    left = self._deadline - time.monotonic()
                    if left <= 0:
                        self._kill(JobTimeout)
                        self._deadline = None
                        continue
                    self._changed.wait(left)
                else:
                    self._changed.wait()

    def _kill(self, kind: type) -> None:
        """(lock held) Kill the running child's process group; its channel closes. The model's own
        work for the job (a generation the child asked for) stops at its next Python step."""
        if self._pid is not None:
            self._stopped = kind
            _kill_group(self._pid)
            if self._thread is not None:
                interrupts.send(self._thread, kind)
                self._sent = True

    def interrupt(self, kind: type) -> None:
        with self._lock:
            self._kill(kind)

    def status(self) -> Dict[str, Any]:
        return {**self.template.status(), "last_start_ms": round(self.started_s * 1e3, 3)}


class TieredRunner(JobRunner):
    """The worker's runner: in the model's process or in a sandbox, by ``--sandbox`` mode and key tier."""

    def __init__(self, mode: str, in_process: JobRunner, sandbox: Optional[SandboxRunner]) -> None:
        self.mode = mode
        self.in_process = in_process
        self.sandbox = sandbox

    def for_tier(self, tier: Optional[str]) -> JobRunner:
        if self.sandbox is not None and uses_sandbox(self.mode, tier):
            return self.sandbox
        return self.in_process

    def run(self, payload: bytes, model: Any, log: LogLine, time_limit_s: float, local: Optional[Any] = None) -> bytes:
        return self.for_tier(None).run(payload, model, log, time_limit_s, local)

    def interrupt(self, kind: type) -> None:
        self.in_process.interrupt(kind)
        if self.sandbox is not None:
            self.sandbox.interrupt(kind)

    def settle(self) -> None:
        self.in_process.settle()
        if self.sandbox is not None:
            self.sandbox.settle()

    def status(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"mode": self.mode}
        if self.sandbox is not None:
            out.update(self.sandbox.status())
        return out


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _error(kind: str, message: str, hint: str) -> Dict[str, Any]:
    return {"type": kind, "message": message, "hint": hint, "frames": []}


def _ended(error: Exception, status: int) -> Dict[str, Any]:
    """Why a child's channel closed without a result, from its wait status."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        what = {signal.SIGXCPU: "it used up its CPU-time limit", signal.SIGKILL: "it was killed (out of memory?)",
                signal.SIGSEGV: "it crashed", signal.SIGSYS: "it made a forbidden system call"}.get(
            sig, "it was killed by signal %d" % sig)
    elif os.WIFEXITED(status):
        what = "it exited with status %d" % os.WEXITSTATUS(status)
    else:
        what = str(error)
    return _error("SandboxError", "the job's sandbox process ended before the job finished: %s (%s)" % (what, error),
                  "the job exceeded a limit of the untrusted tier or did something the sandbox forbids")
