"""The untrusted tier refuses a gradient session before the job runs, decided from the IR's
``backward`` unit fact; the boundary's first-crossing check still catches what the fact cannot show.

The end-to-end tests send request bytes the client compiled (or the same program altered by hand)
to the real sandboxed server on loopback (``--sandbox always``, tests/sandbox/conftest.py).
"""
import dataclasses
import os
import subprocess
import sys
import time

import httpx
import pytest
import torch

from compiler.frontend.lower import lower
from compiler.ir import FACT_BACKWARD, decode, encode
from compiler.ir.request import decode_request, encode_request
from runtime.sandbox.refusals import refusal, refusal_of_request

from serverproc import _env

PROMPT = "The Eiffel Tower is in the city of"
KEY_HEADER = "ndif-api-key"
BEFORE = "before the gradient session"
HEADER_TEXT = "with logits.sum().backward():"
HERE = os.path.abspath(__file__)


@pytest.fixture(scope="module")
def model(gpt2_path):
    """The tiny GPT-2 with gradients off, as the server hosts it (gradients only where a job asks)."""
    from nnsight import LanguageModel

    model = LanguageModel(gpt2_path, dispatch=True)
    model.requires_grad_(False)
    return model


def _line_of(text: str) -> int:
    with open(HERE, encoding="utf-8") as f:
        return next(i for i, line in enumerate(f, 1) if line.strip() == text)


def _gradient_payload(model) -> bytes:
    """The client's request bytes for a trace that prints and saves, then opens a gradient session."""
    with model.trace(PROMPT, remote="local") as tracer:
        print(BEFORE)
        early = model.transformer.h[0].output.sum().save()  # noqa: F841
        hs = model.transformer.h[0].output
        hs.requires_grad = True
        logits = model.lm_head.output
        with logits.sum().backward():
            grad = hs.grad.save()  # noqa: F841
    return tracer.remote_payload


def _without_the_fact(data: bytes, version: int) -> bytes:
    """The same request with no unit marked ``backward``: hand-written IR (version 3) or what a
    version-2 client sends (its record is the version-3 one without the fact)."""
    request = decode_request(data)
    program = request.program
    units = tuple(dataclasses.replace(u, facts=tuple(f for f in u.facts if f != FACT_BACKWARD)) for u in program.units)
    program = dataclasses.replace(program, units=units, header=dataclasses.replace(program.header, ir_version=version))
    return encode_request(dataclasses.replace(request, program=program))


def _submit_and_wait(server, key: str, data: bytes, timeout: float = 120.0) -> dict:
    headers = {KEY_HEADER: key, "content-type": "application/octet-stream"}
    answer = httpx.post(server.url + "/v1/requests", content=data, headers=headers, timeout=30)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(server.url + "/v1/requests/" + job_id, headers=headers, timeout=30).json()
        if job["status"] in ("COMPLETED", "ERROR", "CANCELLED"):
            return job
        time.sleep(0.05)
    raise AssertionError("job %s did not finish:\n%s" % (job_id, server.log()))


def _audit_lines(server_data: str, job_id: str) -> list:
    out = subprocess.run([sys.executable, "-m", "runtime.server", "audit", "--since", "1h", "--data-dir",
                          server_data], capture_output=True, text=True, env=_env(), check=True, timeout=60).stdout
    return [line.split(None, 6) for line in out.splitlines() if job_id in line]


# -- the decision, from the IR alone ---------------------------------------------------------------


SOURCE = """\
with model.trace(prompt):
    hs = model.transformer.h[0].output
    hs.requires_grad = True
    loss = (hs.detach() * 2).sum()
    loss.backward()
    with model.lm_head.output.sum().backward(retain_graph=True):
        g = hs.grad.save()
"""


def test_the_refusal_names_the_gradient_sessions_header():
    program = lower(SOURCE, "user_job.py", 1)
    info = refusal(program)
    assert info["type"] == "runtime.sandbox.refusals.UntrustedTierRefusal"
    assert "gradients cannot flow through the hosted model in the untrusted tier" in info["message"]
    assert "user_job.py:6" in info["message"] and "refused before it ran" in info["message"]
    assert "`with model.lm_head.output.sum().backward(retain_graph=True):`" in info["message"]
    assert "trusted tier" in info["hint"] and "remote=False" in info["hint"]
    header = "with model.lm_head.output.sum().backward(retain_graph=True):"
    assert info["frames"] == [["user_job.py", 6, "<module>", header]]


def test_a_plain_backward_call_and_an_older_program_are_not_refused_early():
    plain = lower(SOURCE.rsplit("    with ", 1)[0], "user_job.py", 1)  # loss.backward() on the job's own values
    assert [u.facts for u in plain.units] == [()] and refusal(plain) is None
    program = lower(SOURCE, "user_job.py", 1)
    old = dataclasses.replace(program, header=dataclasses.replace(program.header, ir_version=2),
                              units=tuple(dataclasses.replace(u, facts=()) for u in program.units))
    upgraded = decode(encode(old))  # a version-2 program: its producer never looked for gradient sessions
    assert upgraded.header.ir_version == 3 and not upgraded.knows(FACT_BACKWARD)
    assert refusal(upgraded) is None  # left to the boundary's check while the job runs
    assert refusal_of_request(b"not a request") is None  # the child reports malformed bytes as usual


def test_a_gradient_session_inside_a_local_block_runs_on_the_client_and_is_not_refused():
    source = ("with model.trace(prompt) as tracer:\n    h = model.transformer.h[0].output.save()\n"
              "    with tracer.local():\n        w = h.detach().requires_grad_()\n"
              "        with (w * 2).sum().backward():\n            pass\n")
    program = lower(source, "user_job.py", 1)
    assert [u.facts for u in program.units] == [(), ("local",), ("backward",)]
    assert refusal(program) is None


# -- through the server ----------------------------------------------------------------------------


def test_a_gradient_session_is_refused_before_the_job_runs(model, server, api_key, server_data, remote_config):
    data = _gradient_payload(model)
    assert [u.facts for u in decode_request(data).program.units] == [(), (FACT_BACKWARD,)]
    job = _submit_and_wait(server, api_key, data)
    assert job["status"] == "ERROR", job
    error = job["error"]
    line = _line_of(HEADER_TEXT)
    assert error["type"] == "runtime.sandbox.refusals.UntrustedTierRefusal", error
    assert "%s:%d" % (HERE, line) in error["message"] and "refused before it ran" in error["message"]
    assert error["frames"] == [[HERE, line, "<module>", HEADER_TEXT]]
    # nothing of it ran: the print() before the session sent no line, the save before it does not exist
    assert job["logs"] == [] and job["started"] is not None
    result = httpx.get(server.url + "/v1/requests/%s/result" % job["id"], headers={KEY_HEADER: api_key}, timeout=30)
    assert result.status_code != 200
    rows = _audit_lines(server_data, job["id"])
    assert [(r[2], r[5]) for r in rows] == [("refused", "UntrustedTierRefusal")], rows
    _assert_next_job_is_right(model)


def test_the_client_raises_the_refusal_with_the_users_line(model, remote_config):
    with pytest.raises(Exception, match="refused before it ran") as info:
        with model.trace(PROMPT, remote=True):
            hs = model.transformer.h[0].output
            hs.requires_grad = True
            with model.lm_head.output.sum().backward():  # the refused line
                grad = hs.grad.save()  # noqa: F841
    assert "gradients cannot flow through the hosted model in the untrusted tier" in str(info.value)
    assert "%s:%d" % (HERE, _line_of("with model.lm_head.output.sum().backward():  # the refused line")) \
        in str(info.value)


@pytest.mark.parametrize("version", [3, 2], ids=["hand-written v3 without the fact", "v2 program"])
def test_without_the_fact_the_first_crossing_still_refuses(model, server, api_key, remote_config, version):
    """The backstop: the job runs until a value that requires grad would go back into the model."""
    job = _submit_and_wait(server, api_key, _without_the_fact(_gradient_payload(model), version))
    assert job["status"] == "ERROR", job
    assert job["error"]["type"] == "runtime.sandbox.values.BoundaryError", job["error"]
    assert "gradients cannot flow through the hosted model in the untrusted tier" in job["error"]["message"]
    assert job["logs"] == [BEFORE]  # it ran part-way: the refusal came at the crossing
    _assert_next_job_is_right(model)


def _assert_next_job_is_right(model) -> None:
    """The next job is served by an unchanged model: its values equal a local run's."""
    def run(remote):
        with model.trace(PROMPT, remote=remote):
            hidden = model.transformer.h[0].output.save()
            logits = model.lm_head.output.save()
        return hidden, logits

    (hidden, logits), (hidden_local, logits_local) = run(True), run(None)
    assert torch.equal(hidden, hidden_local) and torch.equal(logits, logits_local)
