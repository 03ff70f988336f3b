"""The server's handle on the warm template process (:mod:`.template`).

Started once, early, from the server process with a clean environment (an
allow-list: no API keys, no HF_TOKEN, no server settings -- a child's memory
starts as a copy of the template's, so what the template never had, no child
can find). Thread-safe: the worker asks for one child per job.
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import logging
import threading
from typing import Any, Dict, List, Optional, Tuple

from compiler.ir import framing

from .confine import Limits

# What the template's environment keeps from the server's: where Python and the models' files are.
ENV_ALLOWED = ("PATH", "PYTHONPATH", "HOME", "LANG", "LC_ALL", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE",
               "TRANSFORMERS_OFFLINE", "TRANSFORMERS_CACHE", "MKL_CBWR", "XDG_CACHE_HOME")
_CONTROL_MAX = 65536
log = logging.getLogger("nnsight.server")


class SandboxUnavailable(Exception):
    """The template process did not start (or died): sandboxed jobs cannot run."""


class WarmTemplate:
    """Starts the template in the background; :meth:`fork` waits for it to be ready."""

    def __init__(self, models: List[str], limits: Limits, required: Optional[List[str]] = None,
                 start_timeout_s: float = 600.0) -> None:
        self.models = models
        self.limits = limits
        self.required = list(required or ())
        self.start_timeout_s = start_timeout_s
        self.scratch_root = tempfile.mkdtemp(prefix="nnsight-sandbox-")
        self.layers: Dict[str, str] = {}
        self.error: Optional[str] = None
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._control: Optional[socket.socket] = None
        self._proc: Optional[subprocess.Popen] = None
        self._starter = threading.Thread(target=self._start, name="nnsight-sandbox-template", daemon=True)
        self._starter.start()

    def _start(self) -> None:
        try:
            parent, kid = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            env = {k: v for k, v in os.environ.items() if k in ENV_ALLOWED}
            env["TOKENIZERS_PARALLELISM"] = "false"
            env["OMP_NUM_THREADS"] = "1"
            args = [sys.executable, "-m", "runtime.sandbox.template", "--control-fd", str(kid.fileno()),
                    "--scratch-root", self.scratch_root, "--memory-bytes", str(self.limits.memory_bytes),
                    "--cpu-seconds", str(self.limits.cpu_seconds)]
            for spec in self.models:
                args += ["--model", spec]
            for layer in self.required:
                args += ["--require", layer]
            self._proc = subprocess.Popen(args, pass_fds=[kid.fileno()], env=env, stdin=subprocess.DEVNULL)
            kid.close()
            parent.settimeout(self.start_timeout_s)
            message = self._read(parent)
            parent.settimeout(None)
            if message[0] != "ready":
                raise SandboxUnavailable("the sandbox template answered %r" % (message[0],))
            self.layers = message[1]
            self.template_threads = message[2]
            self._control = parent
            for layer, what in self.layers.items():
                log.info("sandbox layer %-12s %s", layer, what)
        except Exception as error:  # noqa: BLE001 - reported on every sandboxed job and in the metrics
            self.error = "%s: %s" % (type(error).__name__, error)
            log.error("the sandbox template did not start: %s", self.error)
        finally:
            self._ready.set()

    @staticmethod
    def _read(sock: socket.socket) -> List[Any]:
        data = sock.recv(_CONTROL_MAX)
        if not data:
            raise SandboxUnavailable("the sandbox template process exited")
        message = framing.unpack(data, "template control message")
        if type(message) is not list or not message:
            raise SandboxUnavailable("malformed message from the sandbox template")
        return message

    def wait_ready(self, timeout: Optional[float] = None) -> None:
        if not self._ready.wait(self.start_timeout_s if timeout is None else timeout):
            raise SandboxUnavailable("the sandbox template is still starting")
        if self._control is None:
            raise SandboxUnavailable("the sandbox template failed to start: %s" % self.error)

    def fork(self, arena_fd: int) -> Tuple[int, socket.socket]:
        """A new confined child for one job: ``(pid, the model process's end of its channel)``.

        ``arena_fd``: the job's shared-memory arena (:mod:`.arena`), passed to the child."""
        self.wait_ready()
        ours, theirs = socket.socketpair()
        try:
            with self._lock:
                socket.send_fds(self._control, [framing.pack(["fork"])], [theirs.fileno(), arena_fd])
                message = self._read(self._control)
        except OSError as error:
            ours.close()
            raise SandboxUnavailable("the sandbox template process is gone (%s)" % error) from None
        finally:
            theirs.close()
        if message[0] != "forked" or type(message[1]) is not int:
            ours.close()
            raise SandboxUnavailable("the sandbox template could not fork: %r" % (message,))
        return message[1], ours

    def reap(self, pid: int) -> int:
        """Wait for a child the caller killed (or that ended); its wait status."""
        with self._lock:
            self._control.send(framing.pack(["reap", pid]))
            message = self._read(self._control)
        return message[2] if message[0] == "reaped" else -1

    def status(self) -> Dict[str, Any]:
        if not self._ready.is_set():
            return {"state": "starting"}
        if self._control is None:
            return {"state": "failed", "error": self.error}
        return {"state": "ready", "layers": self.layers}

    def close(self) -> None:
        if self._control is not None:
            self._control.close()
        if self._proc is not None:
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        shutil.rmtree(self.scratch_root, ignore_errors=True)
