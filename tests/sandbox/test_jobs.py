"""Jobs in the untrusted tier through a real server: features, hostile jobs, and the model after them."""
import pytest
import torch

PROMPT = "The Eiffel Tower is in the city of"


def _logits(model, remote):
    with model.trace(PROMPT, remote=remote):
        out = model.lm_head.output.save()
    return out


def test_calling_a_hosted_module_on_a_value(gpt2, remote_config):
    def run(remote):
        with gpt2.trace(PROMPT, remote=remote):
            hidden = gpt2.transformer.ln_f.output
            logits = gpt2.lm_head(hidden).save()
            top = gpt2.lm_head(hidden[:, -1]).argmax(dim=-1).save()
        return logits, top

    (logits, top), (logits_local, top_local) = run(True), run(None)
    assert torch.equal(logits, logits_local) and torch.equal(top, top_local)


def test_in_place_edit_of_a_module_input_reaches_the_model(gpt2, remote_config):
    def run(remote):
        with gpt2.trace(PROMPT, remote=remote):
            gpt2.transformer.h[1].input[:, -1] = 0  # the block's residual stream (its caller keeps it too)
            out = gpt2.lm_head.output.save()
        return out

    assert torch.equal(run(True), run(None))


def test_model_output_and_a_skipped_module(gpt2, remote_config):
    def run(remote):
        with gpt2.trace(PROMPT, remote=remote):
            gpt2.transformer.h[0].mlp.skip(torch.zeros(1, 8, 64))
            logits = gpt2.output.logits.save()  # a ModelOutput crossed from the model process
        return logits

    assert torch.equal(run(True), run(None))


def test_weights_stay_in_the_model_process(gpt2, remote_config):
    with gpt2.trace(PROMPT, remote=True):
        weight = gpt2.lm_head.weight.save()
    assert weight.device.type == "meta"  # the sandbox never holds the hosted weights
    with gpt2.trace(PROMPT, remote=True):
        gpt2.lm_head.weight[:] = 0  # changes the weightless twin only
        out = gpt2.lm_head.output.save()
    assert torch.equal(out, _logits(gpt2, None))


def test_an_allocation_over_the_memory_limit_fails_cleanly_and_the_next_job_is_right(gpt2, remote_config):
    with pytest.raises(Exception, match="allocate"):
        with gpt2.trace(PROMPT, remote=True):
            big = torch.ones(1 << 30).sum().save()  # 4 GiB, over this server's --sandbox-memory of 1 GiB
    assert torch.equal(_logits(gpt2, True), _logits(gpt2, None))


def test_a_job_killed_at_its_time_limit_leaves_the_model_unchanged(gpt2, remote_config):
    from nnsight.remote import RemoteJobError

    with pytest.raises(RemoteJobError, match="limit"):
        with gpt2.trace(PROMPT, remote=True):
            gpt2.transformer.h[0].output[:] = 0
            hidden = gpt2.transformer.h[1].output
            n = 0
            while n >= 0:  # the model process is waiting for this intervention when the child dies
                n += 1
    assert torch.equal(_logits(gpt2, True), _logits(gpt2, None))


def test_a_hook_error_unwinds_the_model_and_names_the_users_line(gpt2, remote_config):
    with pytest.raises(IndexError, match="index 1000") as info:
        with gpt2.trace(PROMPT, remote=True):
            hidden = gpt2.transformer.h[0].output
            hidden[:, :, 1000] = 1  # index out of range for the 64-wide hidden state
    assert "hidden[:, :, 1000] = 1" in "".join(__import__("traceback").format_tb(info.tb))
    assert torch.equal(_logits(gpt2, True), _logits(gpt2, None))


def test_metrics_name_the_sandbox_layers(server, api_key):
    import httpx

    metrics = httpx.get(server.url + "/v1/metrics", headers={"ndif-api-key": api_key}, timeout=30).json()
    runner = metrics["runner"]
    assert runner["mode"] == "always" and runner["state"] == "ready"
    assert "landlock" in runner["layers"] and "seccomp" in runner["layers"]


def test_gradients_through_the_hosted_model_are_refused_with_a_clear_error(gpt2_path, remote_config):
    from nnsight import LanguageModel

    model = LanguageModel(gpt2_path)
    with pytest.raises(Exception, match="gradients cannot flow through the hosted model in the untrusted tier"):
        with model.trace(PROMPT, remote=True):
            hs = model.transformer.h[0].output
            hs.requires_grad = True
            logits = model.lm_head.output
            with logits.sum().backward():
                grad = hs.grad.save()


def test_gradients_of_the_jobs_own_computation_work(gpt2, remote_config):
    def run(remote):
        with gpt2.trace(PROMPT, remote=remote):
            hidden = gpt2.transformer.h[1].output[0].detach()
            probe = torch.ones(64, requires_grad=True)
            loss = (hidden @ probe).sum()
            loss.backward()
            grad = probe.grad.save()
        return grad

    assert torch.equal(run(True), run(None))


def _children(pid: int):
    import os

    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def _template_pid(server) -> int:
    for pid in _children(server.proc.pid):
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            if b"runtime.sandbox.template" in f.read():
                return pid
    raise AssertionError("no sandbox template process under the server")


def test_the_template_and_its_children_never_had_the_servers_secrets(server, gpt2, remote_config, server_secret):
    SECRET = server_secret
    _logits(gpt2, True)
    template = _template_pid(server)
    with open("/proc/%d/environ" % server.proc.pid, "rb") as f:
        assert SECRET.encode() in f.read()  # the server has it (the test put it there)
    read = 0
    for pid in [template] + _children(template):
        try:
            with open("/proc/%d/environ" % pid, "rb") as f:
                environ = f.read()
        except (ProcessLookupError, FileNotFoundError):  # a finished job's child, reaped meanwhile
            continue
        read += 1
        assert SECRET.encode() not in environ and b"HF_TOKEN" not in environ
    assert read >= 2  # the template and at least its spare child


def test_no_process_outlives_its_job(server, gpt2, remote_config):
    import time

    for _ in range(3):
        _logits(gpt2, True)
    template = _template_pid(server)
    deadline = time.monotonic() + 10
    while len(_children(template)) > 1 and time.monotonic() < deadline:  # the reaper runs off the job's path
        time.sleep(0.1)
    assert len(_children(template)) <= 1  # only the spare, waiting for the next job
