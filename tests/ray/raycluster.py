"""A real two-node Ray cluster on this machine for the tests: a head and a second node, 127.0.0.1 only.

``raynodes.py`` runs both nodes in one subprocess, in its own process group, so the teardown
stops every process they started (and nothing else: never ``ray stop``, which stops every Ray
on the machine). Every Ray process listens on 127.0.0.1 only (``test_ray_server.py`` checks each
socket): both nodes have the address ``127.0.0.1``, and the drivers (the front, ``driver()``)
run with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which makes ``ray.init(address="127.0.0.1:...")``
keep 127.0.0.1 instead of replacing it with the machine's address. ``RAY_TMPDIR`` keeps the
cluster's address file in its own temp dir, where no other ``ray.init()`` on the machine finds it.
Kept small: one logical CPU per node, no dashboard, no Ray Client server, a 100 MB object store,
usage stats and metrics off. Token authentication is off (``RAY_AUTH_MODE=disabled``): nothing
off this machine can reach the cluster.
"""
import os
import signal
import subprocess
import sys
import time

from serverproc import ROOT, free_port
from sockets import process_tree

NODES_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "raynodes.py")
OBJECT_STORE_BYTES = 100 * 1024 * 1024


def ray_env() -> dict:
    """The environment of the cluster and of every driver connecting to it (the front included)."""
    env = dict(os.environ)
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", RAY_DEDUP_LOGS="0",
               RAY_enable_metrics_collection="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class RayCluster:
    """A head and a second node on this machine (``raynodes.py``), both on 127.0.0.1."""

    def __init__(self, temp_dir: str, cpus_per_node: int = 1) -> None:
        self.temp_dir = temp_dir
        self.cpus = cpus_per_node
        self.port = free_port()
        self.procs = []
        self.logs = []

    @property
    def address(self) -> str:
        return "127.0.0.1:%d" % self.port

    def start(self, timeout: float = 180.0) -> "RayCluster":
        # RAY_TMPDIR: Ray writes the address file that ray.init() looks for under $RAY_TMPDIR/ray
        # (default /tmp/ray, shared by every Ray on the machine)
        os.makedirs(os.path.join(self.temp_dir, "ray"), exist_ok=True)
        log_path = os.path.join(self.temp_dir, "nodes.log")
        env = dict(ray_env(), RAY_TMPDIR=self.temp_dir)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, NODES_SCRIPT, self.temp_dir, str(self.port), str(self.cpus),
                                     str(OBJECT_STORE_BYTES)], stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        self.procs.append(proc)
        self.logs.append(log_path)
        ready = "ready %s" % self.address
        deadline = time.monotonic() + timeout
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError("the Ray nodes exited with %s:\n%s" % (proc.returncode, self.log(log_path)))
                if ready in self.log(log_path):
                    return self
                if time.monotonic() > deadline:
                    raise RuntimeError("the Ray nodes did not come up in %gs:\n%s" % (timeout, self.log(log_path)))
                time.sleep(0.25)
        except BaseException:
            self.stop()
            raise

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
        """SIGTERM the nodes' process group, then SIGKILL what is left of it."""
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
                os.killpg(proc.pid, signal.SIGKILL)  # the nodes' own processes (raylets, gcs, workers)
            except ProcessLookupError:
                pass
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.procs = []

    def processes(self) -> dict:
        """Every running process of the cluster, ``{pid: command line}``: the descendants of the
        nodes' launcher and anything with the cluster's temp dir in its command line."""
        found = process_tree([proc.pid for proc in self.procs])
        found.update((int(line.split(" ", 1)[0]), line.split(" ", 1)[1]) for line in self.leftover_processes())
        return found

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
