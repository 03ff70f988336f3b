"""From inside a process confined as every sandbox child is: each attack fails, nothing escapes.

The child is confined by :func:`runtime.sandbox.confine.confine` with every layer this kernel
offers required (network namespace, capabilities, Landlock, seccomp), after a warm import of
torch and the runtime, exactly as the template's children are; the attacks run as plain Python
(no language-level guards), so these tests check the kernel layers themselves.
"""
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from runtime.sandbox import landlock, seccomp

    if landlock.abi_version() <= 0 or seccomp.library() is None:
        pytest.skip("this kernel or system lacks Landlock or libseccomp")
    tmp = tmp_path_factory.mktemp("confinement")
    secret = tmp / "server-data" / "keys.txt"
    secret.parent.mkdir()
    secret.write_text("sk-secret-of-the-server")
    escape = tmp / "escaped.txt"
    out = tmp / "report.json"
    env = dict(os.environ, PYTHONPATH=ROOT, HF_TOKEN="sk-secret-token")
    subprocess.run([sys.executable, os.path.join(HERE, "confined_attempts.py"), str(out), str(secret), str(escape)],
                   env=env, check=True, timeout=300)
    return json.loads(out.read_text())


def test_every_layer_is_active(report):
    layers = report["attacks"]["layers"]
    for layer in ("session", "fds", "environment", "scratch", "rlimits", "netns", "capabilities", "no_new_privs",
                  "landlock", "seccomp"):
        assert layer in layers and not layers[layer].startswith("MISSING"), (layer, layers)


@pytest.mark.parametrize("attempt", ["socket_inet", "socket_unix", "read_etc_hostname", "read_secret_file",
                                     "list_root", "read_proc_environ", "write_outside_scratch",
                                     "write_over_file_limit", "fork", "exec", "signal_parent", "allocate_2GiB",
                                     "torch_allocate_2GiB"])
def test_attack_is_denied(report, attempt):
    assert report["attacks"]["attempts"][attempt].startswith("denied"), report["attacks"]["attempts"][attempt]


def test_the_job_still_works_in_its_scratch_directory(report):
    attempts = report["attacks"]["attempts"]
    assert attempts["write_scratch"] == "ok: 4"
    assert attempts["thread"] == "ok"  # threads are allowed; they end with the child
    assert attempts["environ_has_secret"] == "ok"  # no variable holds the server's secret


def test_nothing_escaped(report):
    assert report["escape_exists"] is False
    assert report["attacks"]["leftover_processes"] is False  # the sleeping thread died with its process
    assert report["attacks"]["signal"] == 0


def test_a_cpu_bomb_is_stopped_by_its_cpu_limit(report):
    import signal

    assert report["cpu_bomb"]["signal"] in (signal.SIGXCPU, signal.SIGKILL)
    assert report["cpu_bomb"]["leftover_processes"] is False
