"""What a remote job shows on the client: the whole status lifecycle in order (the server replays
it to a late subscriber), a live status line and a download bar on a terminal (a real pseudo-TTY),
plain log lines and no bar elsewhere."""
import os
import sys
import textwrap

import pytest

from serverproc import ROOT

LIFECYCLE = ["RECEIVED", "QUEUED", "DISPATCHED", "RUNNING", "COMPLETED"]
PROMPT = "The Eiffel Tower is in the city of"


def _statuses(frames):
    return [f["status"] for f in frames if f["status"] != "LOG"]


def test_every_subscriber_sees_the_whole_lifecycle_in_order(server, api_key, gpt2):
    from nnsight.remote.client import Client

    with gpt2.trace(PROMPT, remote="local") as tracer:
        gpt2.lm_head.output.save()
    with Client(server.host, api_key) as client:
        for _ in range(5):  # subscribing right after the submit: DISPATCHED often came first
            job_id = client.submit(tracer.remote_payload)["id"]
            assert _statuses(client.events(job_id)) == LIFECYCLE
        # a subscriber that comes after the end still gets the whole story
        assert _statuses(client.events(job_id)) == LIFECYCLE


def test_a_blocking_call_logs_the_lifecycle_in_order_when_not_a_tty(gpt2, remote_config, capsys):
    with gpt2.trace(PROMPT, remote=True):
        print("from the server")
        out = gpt2.lm_head.output.save()
    assert out.shape[-1] == 768
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    shown = [line.split("] ", 1)[1].split(":")[0] for line in lines if line.startswith("[")]
    assert shown == LIFECYCLE, captured.err
    assert "\r" not in captured.err and "downloading" not in captured.err  # no live line, no bar
    assert "from the server" in captured.out


SCRIPT = textwrap.dedent('''
    import sys
    import torch
    from nnsight import CONFIG, LanguageModel
    CONFIG.API.HOST, CONFIG.API.APIKEY = sys.argv[1], sys.argv[2]
    CONFIG.APP.REMOTE_LOGGING = sys.argv[3] == "on"
    model = LanguageModel(sys.argv[4])
    with model.trace("The Eiffel Tower is in the city of", remote=True):
        noise = torch.randn(64, 8, 768, generator=torch.Generator().manual_seed(0))
        big = (model.lm_head.output + noise).save()  # 1.5 MB that does not compress: a download bar
    print("GOT", tuple(big.shape))
''')


def _run(script_path, server, api_key, gpt2_path, logging, tty):
    args = [script_path, server.host, api_key, logging, gpt2_path]
    env = dict(os.environ, PYTHONPATH=ROOT, TERM="xterm")
    if not tty:
        import subprocess

        proc = subprocess.run([sys.executable] + args, capture_output=True, text=True, env=env, cwd=ROOT,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout, proc.stderr
    import pexpect

    child = pexpect.spawn(sys.executable, args, env=env, cwd=ROOT, timeout=120, encoding="utf-8",
                          dimensions=(24, 160))
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before[-3000:]
    return child.before, ""


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "remote_job.py"
    path.write_text(SCRIPT)
    return str(path)


def test_a_terminal_shows_a_live_status_line_and_a_download_bar(script, server, api_key, gpt2_path):
    out, _ = _run(script, server, api_key, gpt2_path, "on", tty=True)
    assert "GOT (64, 8, 768)" in out
    assert "\r" in out  # redrawn in place
    for status in LIFECYCLE:
        assert status in out, out
    assert out.index("QUEUED") < out.index("RUNNING") < out.index("COMPLETED")
    assert "downloading result" in out, out


def test_a_terminal_stays_quiet_with_remote_logging_off(script, server, api_key, gpt2_path):
    out, _ = _run(script, server, api_key, gpt2_path, "off", tty=True)
    assert "GOT (64, 8, 768)" in out
    assert "RUNNING" not in out and "downloading" not in out, out


def test_not_a_tty_no_live_line_and_no_bar(script, server, api_key, gpt2_path):
    out, err = _run(script, server, api_key, gpt2_path, "on", tty=False)
    assert "GOT (64, 8, 768)" in out
    assert "\r" not in err and "downloading" not in err and "\x1b" not in err
    assert [line.split("] ", 1)[1].split(":")[0] for line in err.splitlines() if line.startswith("[")] == LIFECYCLE


def test_a_queued_job_shows_its_queue_position(gpt2, remote_config, capsys):
    import time

    with gpt2.trace(PROMPT, remote=True, blocking=False) as busy:  # keeps the worker busy for a second
        time.sleep(1.0)
    with gpt2.trace(PROMPT, remote=True) as tracer:
        out = gpt2.lm_head.output.save()
    assert out.shape[-1] == 768
    err = capsys.readouterr().err
    mine = [line for line in err.splitlines() if line.startswith("[%s]" % tracer.backend.job_id)]
    assert "[%s] QUEUED: position 0" % tracer.backend.job_id in mine, err  # waited behind the busy job
    # Each move of the queue is shown (position 1 while the busy job was not yet taken, then 0):
    # the lifecycle is in order with QUEUED shown once per position.
    queued = [line for line in mine if ": position " in line]
    assert len(queued) == len(set(queued)), err
    shown = [line.split("] ", 1)[1].split(":")[0] for line in mine]
    assert [s for i, s in enumerate(shown) if i == 0 or s != shown[i - 1]] == LIFECYCLE, err
    while busy.backend() is None:
        time.sleep(0.05)
