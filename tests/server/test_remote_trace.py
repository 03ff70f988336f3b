"""remote=True through a real server on loopback gives the values of a local run."""
import time

import pytest
import torch

PROMPT = "The Eiffel Tower is in the city of"


def test_save_matches_local(gpt2, remote_config):
    with gpt2.trace(PROMPT, remote=True):
        hidden = gpt2.transformer.h[1].output[0].save()
        logits = gpt2.lm_head.output.save()
    with gpt2.trace(PROMPT):
        hidden_local = gpt2.transformer.h[1].output[0].save()
        logits_local = gpt2.lm_head.output.save()
    assert torch.equal(hidden, hidden_local)
    assert torch.equal(logits, logits_local)


def test_write_and_two_invokes_match_local(gpt2, remote_config):
    def run(remote):
        with gpt2.trace(remote=remote) as tracer:
            with tracer.invoke(PROMPT):
                clean = gpt2.lm_head.output[0][-1].argmax(dim=-1).save()
            with tracer.invoke("Shaquille O'Neal plays the sport of"):
                gpt2.transformer.h[0].output[:, -1, :] = 0
                patched = gpt2.lm_head.output[0][-1].save()
        return clean, patched

    remote, local = run(True), run(None)
    assert torch.equal(remote[0], local[0]) and torch.equal(remote[1], local[1])


def test_generate_matches_local(gpt2, remote_config):
    def run(remote):
        with gpt2.generate(PROMPT, max_new_tokens=3, remote=remote) as tracer:
            steps = list().save()
            for step in tracer.iter[:]:
                steps.append(gpt2.lm_head.output[0][-1].argmax(dim=-1))
            out = tracer.result.save()
        return steps, out

    (steps, out), (steps_local, out_local) = run(True), run(None)
    assert len(steps) == 3 and [int(s) for s in steps] == [int(s) for s in steps_local]
    assert torch.equal(out, out_local)


def test_session_is_one_request_with_shared_values(gpt2, remote_config):
    def run(remote):
        with gpt2.session(remote=remote):
            with gpt2.trace("Megan Rapinoe plays the sport of"):
                hs = gpt2.transformer.h[1].output[:, 5, :]
            with gpt2.trace("Shaquille O'Neal plays the sport of"):
                gpt2.transformer.h[1].output[:, 6, :] = hs
                patched = gpt2.lm_head.output[0][-1].save()
        return patched

    assert torch.equal(run(True), run(None))


def test_print_arrives_as_log_lines(gpt2, remote_config, capsys):
    with gpt2.trace(PROMPT, remote=True):
        print("hidden shape", tuple(gpt2.transformer.h[0].output.shape))
    captured = capsys.readouterr()
    assert "hidden shape (1, 8, 64)" in captured.out
    assert "RUNNING" in captured.err and "COMPLETED" in captured.err  # the status lifecycle


def test_remote_logging_off_silences_status_lines(gpt2, remote_config, capsys):
    remote_config.APP.REMOTE_LOGGING = False
    try:
        with gpt2.trace(PROMPT, remote=True):
            out = gpt2.lm_head.output.save()
    finally:
        remote_config.APP.REMOTE_LOGGING = True
    assert out.shape[-1] == 768
    assert "COMPLETED" not in capsys.readouterr().err


def test_error_shows_the_users_line(gpt2, remote_config):
    import traceback

    with pytest.raises(AttributeError, match="no_such_attribute") as info:
        with gpt2.trace(PROMPT, remote=True):
            h = gpt2.transformer.h[0].output[0]
            h.no_such_attribute  # noqa: B018
    frames = traceback.extract_tb(info.value.__traceback__)
    assert any(f.filename == __file__ and "no_such_attribute" in (f.line or "") for f in frames)


def test_non_blocking_backend(gpt2, remote_config):
    with gpt2.trace(PROMPT, remote=True, blocking=False) as tracer:
        logits = gpt2.lm_head.output.save()
    backend = tracer.backend
    assert isinstance(backend.job_id, str)
    result = None
    deadline = time.monotonic() + 30
    while result is None and time.monotonic() < deadline:
        result = backend()
        time.sleep(0.02)
    assert result is not None and result["id"] == backend.job_id
    with gpt2.trace(PROMPT):
        local = gpt2.lm_head.output.save()
    assert torch.equal(result["logits"], local)
    assert backend.job_status == "COMPLETED"


def test_job_over_its_time_limit_fails_cleanly_and_the_next_runs(gpt2, remote_config):
    from nnsight.remote import RemoteJobError

    with pytest.raises(RemoteJobError, match="limit"):
        with gpt2.trace(PROMPT, remote=True):
            n = 0
            while n >= 0:
                n += 1
    with gpt2.trace(PROMPT, remote=True):
        out = gpt2.lm_head.output.save()
    assert out.shape[-1] == 768


def test_rename_and_revision_travel_with_the_request(gpt2_path, remote_config):
    from nnsight import LanguageModel

    renamed = LanguageModel(gpt2_path, rename={"lm_head": "unembed", ".transformer.h": "layers"})
    with renamed.trace(PROMPT, remote=True):
        hidden = renamed.layers[0].output.save()
        out = renamed.unembed.output.save()
    with renamed.trace(PROMPT):
        hidden_local = renamed.layers[0].output.save()
        out_local = renamed.unembed.output.save()
    assert torch.equal(out, out_local) and torch.equal(hidden, hidden_local)
    plain = LanguageModel(gpt2_path, revision="main")
    with pytest.raises(AttributeError, match="unembed"):  # another client's aliases are not left behind
        with plain.trace(PROMPT, remote=True):
            plain.unembed.output.save()


def test_gradients_match_local(gpt2_path, remote_config):
    from nnsight import LanguageModel

    model = LanguageModel(gpt2_path, dispatch=True)
    model.requires_grad_(False)  # as the server hosts it: gradients only where a job asks

    def run(remote):
        with model.trace(PROMPT, remote=remote):
            hs = model.transformer.h[0].output
            hs.requires_grad = True
            logits = model.lm_head.output
            with logits.sum().backward():
                grad = hs.grad.save()
        return grad

    remote, local = run(True), run(None)
    assert remote.shape == local.shape == (1, 8, 64) and torch.equal(remote, local)
