"""A real two-node Ray cluster on this machine for the tests: a head and a second node (subprocesses).

Both run ``ray start --block`` in their own process group, so the teardown stops every
process they started (and nothing else: never ``ray stop``, which stops every Ray on the
machine). Kept small: one logical CPU per node, no dashboard, a 100 MB object store,
usage stats off. Token authentication is off (``RAY_AUTH_MODE=disabled``): the cluster
serves only this machine's tests. Ray advertises the machine's own address rather than
127.0.0.1 (it refuses a multi-node cluster on loopback), and its ports listen on every
interface; a machine that must not expose them needs a firewall in front of them.
"""
import os
import signal
import subprocess
import sys
import time

from serverproc import ROOT, free_port

READY_LINE = "block forever"


def ray_env() -> dict:
    env = dict(os.environ)
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", RAY_DEDUP_LOGS="0",
               RAY_enable_metrics_collection="0")
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _ray_cli() -> str:
    return os.path.join(os.path.dirname(sys.executable), "ray")


class RayCluster:
    """``ray start --head`` plus ``ray start --address`` (the second node), both on this machine."""

    def __init__(self, temp_dir: str, cpus_per_node: int = 1) -> None:
        self.temp_dir = temp_dir
        self.cpus = cpus_per_node
        self.port = free_port()
        self.procs = []
        self.logs = []

    @property
    def address(self) -> str:
        return "127.0.0.1:%d" % self.port

    def _start(self, name: str, args, timeout: float) -> None:
        log_path = os.path.join(self.temp_dir, name + ".log")
        common = ["--num-cpus", str(self.cpus), "--num-gpus", "0", "--object-store-memory", str(100 * 1024 * 1024),
                  "--disable-usage-stats", "--block"]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([_ray_cli(), "start"] + list(args) + common, stdout=log, stderr=subprocess.STDOUT,
                                    env=ray_env(), start_new_session=True)
        self.procs.append(proc)
        self.logs.append(log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("ray start (%s) exited with %s:\n%s" % (name, proc.returncode, self.log(log_path)))
            if READY_LINE in self.log(log_path):
                return
            time.sleep(0.25)
        raise RuntimeError("ray start (%s) did not come up in %gs:\n%s" % (name, timeout, self.log(log_path)))

    def start(self, timeout: float = 180.0) -> "RayCluster":
        os.makedirs(self.temp_dir, exist_ok=True)
        try:
            self._start("head", ["--head", "--port", str(self.port), "--node-ip-address", "127.0.0.1",
                                 "--include-dashboard=false", "--temp-dir", self.temp_dir], timeout)
            self._start("node", ["--address", self.address, "--node-ip-address", "127.0.0.1"], timeout)
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def log(path: str) -> str:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def driver(self, code: str) -> subprocess.Popen:
        """A fresh Python connected to the cluster as a driver, running ``code`` (``ray`` imported,
        ``ADDRESS`` set) after printing ``connected``: keeps Ray out of the test process."""
        script = ("import ray\nADDRESS = %r\nray.init(address=ADDRESS, logging_level='ERROR')\n"
                  "print('connected', flush=True)\n%s\nray.shutdown()\n" % (self.address, code))
        return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=ray_env())

    def stop(self) -> None:
        """SIGTERM each node's process group, then SIGKILL what is left of it."""
        for proc in reversed(self.procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 15.0
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the node's own processes (raylet, gcs, workers)
            except ProcessLookupError:
                pass
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.procs = []

    def leftover_processes(self) -> list:
        """Processes still running from this cluster's session (its temp dir in their command line)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
                with open("/proc/%s/stat" % entry) as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if self.temp_dir in cmd and state != "Z":
                found.append("%s %s" % (entry, cmd[:120]))
        return found
