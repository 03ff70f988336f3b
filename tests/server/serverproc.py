"""Run ``nnsight-server`` as a subprocess on loopback for the tests (a uniquely named module)."""
import os
import signal
import socket
import subprocess
import sys
import time

import httpx

# The limits the shared test server runs with (tests/server/conftest.py).
MAX_REQUEST_BYTES = 2_000_000
MAX_IN_FLIGHT = 20  # per key
MAX_QUEUE = 30

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _die_with_parent() -> None:
    """In the child (Linux): killed when the test process dies, even by kill -9 (the server is
    durable by design, so a hard stop is fine)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - other platforms: the fixture's teardown stops it
        pass


def create_key(data_dir: str, name: str = "tests", *options: str) -> str:
    """A new key (``options``: ``--tier trusted``, per-key limits); returns the secret."""
    out = subprocess.run([sys.executable, "-m", "runtime.server", "keys", "create", name, "--data-dir", data_dir,
                          *options],
                         capture_output=True, text=True, env=_env(), check=True, timeout=60)
    return out.stdout.strip().splitlines()[-1]


class ServerProcess:
    """``nnsight-server serve`` hosting the given models, on a free loopback port."""

    def __init__(self, data_dir: str, models, *extra: str) -> None:
        self.data_dir = data_dir
        self.models = list(models)
        self.extra = list(extra)
        self.port = free_port()
        self.proc = None
        self.log_path = os.path.join(data_dir, "server.log")

    @property
    def host(self) -> str:
        return "127.0.0.1:%d" % self.port

    @property
    def url(self) -> str:
        return "http://" + self.host

    def start(self, timeout: float = 90.0) -> "ServerProcess":
        os.makedirs(self.data_dir, exist_ok=True)
        args = [sys.executable, "-m", "runtime.server", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--data-dir", self.data_dir]
        for spec in self.models:
            args += ["--model", spec]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args + self.extra, stdout=log, stderr=subprocess.STDOUT, env=_env(),
                                     preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("nnsight-server exited with %s:\n%s" % (self.proc.returncode, self.log()))
            try:
                if httpx.get(self.url + "/ping", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("nnsight-server did not answer /ping in %gs:\n%s" % (timeout, self.log()))

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def kill9(self) -> None:
        """``kill -9``: no cleanup at all."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
