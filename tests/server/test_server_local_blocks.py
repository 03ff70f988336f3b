"""``with tracer.local():`` through a real server on loopback: the block runs here, mid-job."""
import time
import traceback

import pytest
import torch

PROMPT = "The Eiffel Tower is in the city of"


class ClientSideSteering:
    """Defined in this test module: the server cannot import it, and the block is not sent."""

    def __init__(self, scale):
        self.scale = scale

    def __call__(self, hidden):
        return hidden * self.scale + torch.linspace(0, 1, hidden.shape[-1])


def test_block_computes_with_a_client_only_function_and_writes_back(gpt2, remote_config):
    steer = ClientSideSteering(1.5)
    with gpt2.trace(PROMPT, remote=True) as tracer:
        hidden = gpt2.transformer.h[1].output[0]
        with tracer.local():
            steered = steer(hidden)
        gpt2.transformer.h[1].output[0][:] = steered
        logits = gpt2.lm_head.output.save()
    with gpt2.trace(PROMPT):
        hidden = gpt2.transformer.h[1].output[0]
        gpt2.transformer.h[1].output[0][:] = steer(hidden)
        expected = gpt2.lm_head.output.save()
    with gpt2.trace(PROMPT):
        plain = gpt2.lm_head.output.save()
    assert torch.allclose(logits, expected, atol=1e-5)
    assert not torch.allclose(logits, plain)
    assert "ClientSideSteering" not in tracer.remote_payload.decode("latin-1")


def test_print_in_the_block_runs_here_and_in_place_edits_go_back(gpt2, remote_config, capsys):
    with gpt2.trace(PROMPT, remote=True) as tracer:
        hidden = gpt2.transformer.h[0].output[0]
        with tracer.local():
            print("local block sees", tuple(hidden.shape))
            hidden[:, -1] = 0
            norm = hidden.norm().save()
        last = gpt2.transformer.h[0].output[0][:, -1].save()
    with gpt2.trace(PROMPT):
        shape = gpt2.transformer.h[0].output[0].shape.save()
    assert "local block sees %s" % (tuple(shape),) in capsys.readouterr().out
    assert torch.count_nonzero(last) == 0
    assert isinstance(norm, torch.Tensor) and norm.ndim == 0


def test_error_in_the_block_points_at_the_users_line_and_the_job_ends(gpt2, remote_config):
    from nnsight.remote.client import Client

    with pytest.raises(ZeroDivisionError) as info:
        with gpt2.trace(PROMPT, remote=True) as tracer:
            hidden = gpt2.transformer.h[0].output[0]
            with tracer.local():
                broken = float(hidden.sum()) / 0  # this line
            out = gpt2.lm_head.output.save()
    frames = traceback.extract_tb(info.value.__traceback__)
    assert any(f.filename == __file__ and "# this line" in (f.line or "") for f in frames), frames
    job_id = tracer.backend.job_id
    with Client() as client:
        deadline = time.monotonic() + 10
        while client.status(job_id)["status"] not in ("ERROR", "COMPLETED", "CANCELLED"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        status = client.status(job_id)
    assert status["status"] == "ERROR" and "ZeroDivisionError" in status["error"]["message"]
    with gpt2.trace(PROMPT, remote=True):  # the server runs the next job
        logits = gpt2.lm_head.output.save()
    assert logits.shape[0] == 1


def test_a_block_needs_blocking(gpt2, remote_config):
    with pytest.raises(ValueError, match="blocking=True"):
        with gpt2.trace(PROMPT, remote=True, blocking=False) as tracer:
            hidden = gpt2.transformer.h[0].output[0]
            with tracer.local():
                print(hidden.shape)


def test_the_remote_model_runs_a_block_here(remote_config, capsys):
    """``nnsight.RemoteModel`` (the torch-free client, here with torch loaded) runs the block on
    this side and sends the in-place edit back (tests/server/test_torch_free_local_and_scan.py
    runs it without torch, from other Pythons)."""
    from nnsight import RemoteModel

    model = RemoteModel("gpt2", host=remote_config.API.HOST, api_key=remote_config.API.APIKEY)
    with model.trace(PROMPT) as tracer:
        hidden = model.transformer.h[0].output
        with tracer.local():
            print("the block sees", tuple(hidden.shape))
            hidden[:, -1] = 0
        last = model.transformer.h[0].output[0, -1].save()
    assert "the block sees (1, 8, 64)" in capsys.readouterr().out
    assert torch.count_nonzero(last) == 0


def test_the_remote_model_raises_a_block_error_at_the_users_line(remote_config):
    from nnsight import RemoteModel

    model = RemoteModel("gpt2", host=remote_config.API.HOST, api_key=remote_config.API.APIKEY)
    with pytest.raises(ZeroDivisionError) as info:
        with model.trace(PROMPT) as tracer:
            hidden = model.transformer.h[0].output
            with tracer.local():
                broken = float(hidden.sum()) / 0  # this line
    frames = traceback.extract_tb(info.value.__traceback__)
    assert any(f.filename == __file__ and "# this line" in (f.line or "") for f in frames), frames
    with pytest.raises(ValueError, match="blocking=True"):
        with model.trace(PROMPT, blocking=False) as tracer:
            hidden = model.transformer.h[0].output
            with tracer.local():
                print(hidden.shape)


def test_hostile_replies_are_refused_and_a_malformed_one_ends_the_job(gpt2, server, api_key, remote_config):
    """A raw client: a reply for another block is dropped; a garbled one ends the job; the next runs."""
    import json

    from websockets.sync.client import connect

    from nnsight.remote.client import KEY_HEADER, Client
    from runtime.local_blocks import frame_reply

    with gpt2.trace(PROMPT, remote="local") as tracer:  # the same request bytes remote=True sends
        hidden = gpt2.transformer.h[0].output[0]
        with tracer.local():
            hidden[:] = 0
        out = gpt2.lm_head.output.save()
    with Client() as client:
        job_id = client.submit(tracer.remote_payload)["id"]
        url = client.url.replace("http", "ws", 1) + "/v1/requests/%s/events" % job_id
        with connect(url, additional_headers={KEY_HEADER: api_key}, max_size=None) as socket:
            frames = []
            while True:
                message = socket.recv(timeout=20)
                if isinstance(message, bytes):
                    continue
                frame = json.loads(message)
                frames.append(frame["status"])
                if frame["status"] == "LOCAL":
                    socket.send(frame_reply(frame["block"] + 1, b"NNRS stale"))  # not the pending block
                    socket.send(b"junk")  # not a reply at all
                    socket.send(frame_reply(frame["block"], b"NNRS garbled"))
                if frame["status"] in ("COMPLETED", "ERROR", "CANCELLED"):
                    break
        assert "LOCAL" in frames and frame["status"] == "ERROR", frames
        assert "malformed" in frame["error"]["message"]
    with gpt2.trace(PROMPT, remote=True):
        logits = gpt2.lm_head.output.save()
    assert logits.shape[0] == 1


def test_the_design_example_hybrid_execution(gpt2, remote_config, capsys):
    """Hybrid execution as the user guide shows it (the tiny GPT-2's names and sizes)."""
    local_bias = torch.randn(gpt2.config.n_embd)  # a local tensor
    with gpt2.trace("Hello", remote=True) as tracer:
        hidden = gpt2.transformer.h[1].output[0]  # on the server
        with tracer.local():  # here
            modified = hidden + local_bias
            print("Got hidden states:", hidden.shape)
        gpt2.transformer.h[1].output[0] = modified  # on the server again
        output = gpt2.lm_head.output.save()
    with gpt2.trace("Hello"):
        hidden = gpt2.transformer.h[1].output[0]
        gpt2.transformer.h[1].output[0] = hidden + local_bias
        expected = gpt2.lm_head.output.save()
    assert torch.allclose(output, expected, atol=1e-5)
    assert "Got hidden states: torch.Size(" in capsys.readouterr().out
