"""A runner's thread after its jobs: no stop left pending, nothing left signalled.

A job is stopped by raising an exception in its thread (runtime/server/interrupts.py). Clearing a
pending stop with NULL left CPython 3.11's interpreter signalled for good: the next local trace in
that thread (which skips its with-body with a trace function) then ran one instruction forever.
Each scenario runs in a thread of its own, joined with a timeout, so a hang fails instead of hanging.
"""
import threading
import time

import pytest

PROMPT = "Hello world"


def _payload(gpt2):
    with gpt2.trace(PROMPT, remote="local") as tracer:
        out = gpt2.lm_head.output.save()  # noqa: F841
    return tracer.remote_payload


def _busy_payload(gpt2):
    """A job that spins for minutes (compiled and sent, then cancelled: never run here)."""
    with gpt2.trace(PROMPT, remote=True, blocking=False) as tracer:
        n = 0
        while n < 10 ** 9:
            n += 1
    tracer.backend.cancel()
    return tracer.remote_payload


def _in_a_thread(fn, timeout=120.0):
    outcome = {}

    def target():
        try:
            outcome["value"] = fn()
        except BaseException as error:  # noqa: B902 - reported to the test below
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the thread hung (a stop left pending or the interpreter left signalled)"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _local_trace(gpt2):
    with gpt2.trace(PROMPT):
        out = gpt2.lm_head.output.save()
    return out


@pytest.fixture
def runner():
    from nnsight.tracing.remote import model_for_key, server_tracer
    from runtime.server.runner import InProcessRunner

    return InProcessRunner(server_tracer, model_for_key)


def test_a_local_trace_runs_in_the_thread_after_a_job(gpt2, runner):
    payload = _payload(gpt2)
    expected = _local_trace(gpt2)

    def scenario():
        for _ in range(3):
            assert runner.run(payload, gpt2, lambda line: None, 60.0)
            out = _local_trace(gpt2)  # (skips its with-body with a trace function)
            assert (out == expected).all()
        return True

    assert _in_a_thread(scenario)


def test_a_stopped_job_leaves_no_stop_behind(gpt2, runner, remote_config):
    from runtime.server.runner import JobTimeout

    busy, plain = _busy_payload(gpt2), _payload(gpt2)
    expected = _local_trace(gpt2)

    def scenario():
        with pytest.raises(JobTimeout):
            runner.run(busy, gpt2, lambda line: None, 0.3)
        assert runner.run(plain, gpt2, lambda line: None, 60.0)  # the next job runs to its end
        deadline = time.monotonic() + 0.5  # and no stop lands later, in code that is no job's
        while time.monotonic() < deadline:
            pass
        out = _local_trace(gpt2)
        return bool((out == expected).all())

    assert _in_a_thread(scenario)


def test_a_cancel_after_the_job_ended_is_dropped(gpt2, runner):
    from runtime.server.runner import JobCancelled

    payload = _payload(gpt2)

    def scenario():
        assert runner.run(payload, gpt2, lambda line: None, 60.0)
        runner.interrupt(JobCancelled)  # late: the job is over, no job is running
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            pass
        return _local_trace(gpt2) is not None

    assert _in_a_thread(scenario)
