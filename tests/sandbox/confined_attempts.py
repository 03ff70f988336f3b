"""Run hostile attempts inside a process confined exactly as a sandbox child is (a test helper).

``python confined_attempts.py OUT_JSON SECRET_FILE ESCAPE_PATH`` forks a child from a warm
process (torch, the runtime and a stand-in imported, as in the template), confines it with
:func:`runtime.sandbox.confine.confine` -- the function every job's child runs, with every
layer required -- and tries each attack from inside. The parent writes ``{attempt: outcome}``
and what it observed from outside (exit status, leftover processes) to OUT_JSON.
"""
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time


def attempts(secret_file: str, escape_path: str, scratch: str) -> dict:
    out = {}

    def attempt(name, fn):
        try:
            value = fn()
            out[name] = "ok" if value is None else "ok: %s" % (value,)
        except BaseException as error:  # noqa: B902
            out[name] = "denied: %s %s" % (type(error).__name__, getattr(error, "errno", ""))

    attempt("socket_inet", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(("127.0.0.1", 1)))
    attempt("socket_unix", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
    attempt("read_etc_hostname", lambda: open("/etc/hostname").read())
    attempt("read_secret_file", lambda: open(secret_file).read())
    attempt("list_root", lambda: os.listdir("/"))
    attempt("read_proc_environ", lambda: open("/proc/self/environ", "rb").read())
    attempt("environ_has_secret", lambda: [k for k, v in os.environ.items() if "secret" in v.lower()] or None)
    attempt("write_outside_scratch", lambda: open(escape_path, "w").write("escaped"))
    attempt("write_scratch", lambda: open(os.path.join(scratch, "notes.txt"), "w").write("fine"))
    attempt("write_over_file_limit", lambda: open(os.path.join(scratch, "big"), "wb").write(b"x" * (80 << 20)))
    attempt("fork", lambda: os.fork() and None)
    attempt("exec", lambda: os.execv("/bin/sh", ["sh", "-c", "true"]))
    attempt("signal_parent", lambda: os.kill(os.getppid(), 0))
    attempt("allocate_2GiB", lambda: len(bytearray(2 << 30)))
    attempt("torch_allocate_2GiB", lambda: __import__("torch").ones(1 << 29).sum().item() and None)
    attempt("thread", lambda: threading.Thread(target=time.sleep, args=(30,), daemon=True).start())
    return out


def main() -> int:
    out_path, secret_file, escape_path = sys.argv[1:4]
    import torch  # noqa: F401  (warm, as the template is)

    import runtime.accept  # noqa: F401
    from runtime.sandbox import seccomp
    from runtime.sandbox.channel import Channel
    from runtime.sandbox.confine import GiB, Limits, confine

    seccomp.library()
    limits = Limits(memory_bytes=GiB, cpu_seconds=2)
    layers_wanted = ["netns", "capabilities", "landlock", "seccomp"]
    report = {}
    root = tempfile.mkdtemp(prefix="nnsight-sandbox-test-")

    def child(body):
        parent, kid = socket.socketpair()
        scratch = tempfile.mkdtemp(dir=root)
        pid = os.fork()
        if pid == 0:
            parent.close()
            try:
                layers = confine(kid.fileno(), scratch, limits, layers_wanted)
                Channel(kid).send("result", {"layers": layers, "attempts": body(scratch)})
            finally:
                os._exit(0)
        kid.close()
        try:
            frame = Channel(parent).recv()
            result = frame[1]
        except Exception as error:  # noqa: BLE001
            result = {"error": str(error)}
        _, status = os.waitpid(pid, 0)
        time.sleep(0.2)
        try:
            os.killpg(pid, 0)
            result["leftover_processes"] = True
        except ProcessLookupError:
            result["leftover_processes"] = False
        result["signal"] = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
        return result

    report["attacks"] = child(lambda scratch: attempts(secret_file, escape_path, scratch))

    def cpu_bomb(scratch):
        n = 0
        while True:
            n += 1

    report["cpu_bomb"] = child(cpu_bomb)
    report["escape_exists"] = os.path.exists(escape_path)
    with open(out_path, "w") as f:
        json.dump(report, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
