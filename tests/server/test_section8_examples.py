"""The user guide's remote-execution examples, run as written against a real server on loopback.

Adaptations everywhere: the hosted model is the tiny GPT-2 of the fixtures (``gpt2_path``, served
as ``gpt2``) instead of a hub checkpoint, so Llama module names become GPT-2's
(``model.model.layers[i]`` -> ``model.transformer.h[j]``, with layer indices brought into its 4
blocks: 3 -> 1, 5 -> 2) and widths are its 64; the API key and host come from the test server
(``remote_config``). Everything else (``remote=True``, prints, ``.save()``, the polling loop, the
sessions) is as the guide writes it, and each test checks what the guide says happens, mostly by
running the same code locally and comparing values.
"""
import json
import re

import pytest
import torch

import nnsight
from nnsight import CONFIG, LanguageModel

EIFFEL = "The Eiffel Tower is in the city of"


def _job_ids(err: str) -> set:
    """The job ids of the status lines in captured stderr."""
    return set(re.findall(r"^\[([^\]]+)\] (?:RECEIVED|QUEUED|DISPATCHED|RUNNING|COMPLETED)", err, re.M))


# -- NDIF overview: checking service status ------------------------------------------------------


def test_checking_service_status(remote_config, capsys):
    """``nnsight.ndif_status()`` prints the hosted models; ``is_model_running`` answers True/False."""
    models = nnsight.ndif_status()
    assert "gpt2" in capsys.readouterr().out
    assert [m["name"] for m in models] == ["gpt2"]
    assert nnsight.is_model_running("gpt2") is True
    assert nnsight.is_model_running("meta-llama/Llama-3.1-8B") is False  # not hosted here


# -- setup: API key ------------------------------------------------------------------------------


def test_set_default_api_key_saves_it_for_later_sessions(server, api_key, tmp_path, monkeypatch):
    """``CONFIG.set_default_api_key`` uses the key now and saves it to the per-user config file
    (pointed at a temporary file here, not the user's)."""
    from nnsight.config import Config

    path = str(tmp_path / "config.json")
    monkeypatch.setenv("NNSIGHT_CONFIG", path)
    old = (CONFIG.API.HOST, CONFIG.API.APIKEY, CONFIG._path)
    CONFIG.API.HOST, CONFIG._path = server.host, path
    try:
        CONFIG.set_default_api_key(api_key)
        assert CONFIG.API.APIKEY == api_key
        assert json.load(open(path))["API"]["APIKEY"] == api_key
        assert Config().load().API.APIKEY == api_key  # a later session reads it back
        assert nnsight.is_model_running("gpt2")  # and the server accepts it
    finally:
        CONFIG.API.HOST, CONFIG.API.APIKEY, CONFIG._path = old


# -- basic remote execution ----------------------------------------------------------------------


def test_basic_remote_execution(gpt2_path, gpt2, remote_config, capsys):
    """The model stays on the meta device (no weights loaded here), the trace runs on the server,
    and the saved argmax is the one a local run gives; the status lifecycle is shown as log lines."""
    model = LanguageModel(gpt2_path)
    print(model.device)  # "meta"

    with model.trace("The Eiffel Tower is in the city of", remote=True):
        logit = model.lm_head.output[0][-1].argmax(dim=-1).save()

    print(model.tokenizer.decode(logit))

    with gpt2.trace("The Eiffel Tower is in the city of"):
        expected = gpt2.lm_head.output[0][-1].argmax(dim=-1).save()
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["meta", gpt2.tokenizer.decode(expected)]
    assert str(model.device) == "meta"  # still no weights here after the remote run
    assert torch.equal(logit, expected)
    lines = [line for line in captured.err.splitlines() if line.startswith("[")]
    statuses = [re.match(r"\[[^\]]+\] (\w+)", line).group(1) for line in lines]
    assert statuses == ["RECEIVED", "QUEUED", "DISPATCHED", "RUNNING", "COMPLETED"], lines
    assert len(_job_ids(captured.err)) == 1


def test_remote_logging_off(gpt2, remote_config, capsys):
    """``CONFIG.APP.REMOTE_LOGGING = False`` silences the status lines."""
    from nnsight import CONFIG

    CONFIG.APP.REMOTE_LOGGING = False
    try:
        with gpt2.trace(EIFFEL, remote=True):
            logit = gpt2.lm_head.output[0][-1].argmax(dim=-1).save()
    finally:
        CONFIG.APP.REMOTE_LOGGING = True
    assert logit.ndim == 0
    assert capsys.readouterr().err == ""


# -- remote model parameters ---------------------------------------------------------------------


def test_revision(gpt2_path, gpt2, remote_config):
    """``revision=`` is part of the model's identity sent with the request; the job runs on the
    hosted model and gives the local values."""
    from nnsight.tracing.remote import model_key

    model = LanguageModel(gpt2_path, revision="main")
    with model.trace("Hello", remote=True):
        out = model.lm_head.output.save()
    with gpt2.trace("Hello"):
        expected = gpt2.lm_head.output.save()
    assert json.loads(model_key(model).split(":", 1)[1])["revision"] == "main"
    assert torch.equal(out, expected)


def test_renaming(gpt2_path, gpt2, remote_config):
    """Module aliases work remotely as they do locally."""
    model = LanguageModel(gpt2_path, rename={"lm_head": "unembed"})

    with model.trace("Hello", remote=True):
        logit = model.unembed.output[0][-1].argmax(dim=-1).save()

    with gpt2.trace("Hello"):
        expected = gpt2.lm_head.output[0][-1].argmax(dim=-1).save()
    assert torch.equal(logit, expected)


# -- saving results ------------------------------------------------------------------------------


def test_mutating_a_local_list_does_not_come_back(gpt2, remote_config, capsys):
    """The list is filled on the server (its print arrives as a log line saying 5), but the
    client's list stays empty: the guide's ``assert len(logits_l) == 5`` fails."""
    model = gpt2
    # WRONG: Local list won't be updated
    logits_l = list()
    with model.generate("Hello", max_new_tokens=5, remote=True) as tracer:
        for step in tracer.all():
            logits_l.append(model.lm_head.output[0].save())
        print(f"List length is {len(logits_l)}")  # Shows 5 on server

    with pytest.raises(AssertionError):
        assert len(logits_l) == 5  # FAILS! Local list is still empty
    assert logits_l == []
    assert "List length is 5" in capsys.readouterr().out


def test_list_created_inside_the_trace_and_saved(gpt2, remote_config):
    """A list made inside the trace and saved comes back with one entry per generated token,
    equal to a local run's."""
    model = gpt2

    def run(remote):
        with model.generate("Hello", max_new_tokens=5, remote=remote) as tracer:
            logits_l = list().save()  # Create inside trace
            for step in tracer.all():
                logits_l.append(model.lm_head.output[0].save())
        return logits_l

    logits_l = run(True)
    assert len(logits_l) == 5  # Works!
    local = run(None)
    assert all(torch.equal(a, b) for a, b in zip(logits_l, local))


def test_saving_tensors_efficiently(gpt2, remote_config):
    """``.detach().cpu().save()`` downloads a plain CPU tensor without grad, equal to local."""
    model = gpt2

    def run(remote):
        with model.trace("Hello", remote=remote):
            # Best practice: detach and move to CPU
            logit = model.lm_head.output.detach().cpu().save()
        return logit

    logit = run(True)
    assert logit.device.type == "cpu" and not logit.requires_grad
    assert torch.equal(logit, run(None))


# -- sessions ------------------------------------------------------------------------------------


def test_three_separate_remote_requests(gpt2, remote_config, capsys):
    """Without a session each trace is its own job; the downloaded ``hs`` is sent back with the
    third. The values are a local run's."""
    model = gpt2

    def run(remote):
        with model.trace("Megan Rapinoe plays the sport of", remote=remote):
            hs = model.transformer.h[2].output[:, 5, :].save()

        with model.trace("Shaquille O'Neal plays the sport of", remote=remote):
            out_clean = model.lm_head.output[0][-1].argmax(dim=-1).save()

        with model.trace("Shaquille O'Neal plays the sport of", remote=remote):
            model.transformer.h[2].output[:, 6, :] = hs  # Uses downloaded hs
            out_patched = model.lm_head.output[0][-1].argmax(dim=-1).save()
        return hs, out_clean, out_patched

    remote = run(True)
    assert len(_job_ids(capsys.readouterr().err)) == 3  # three requests
    local = run(None)
    assert all(torch.equal(a, b) for a, b in zip(remote, local))


def test_session_is_a_single_request(gpt2, remote_config, capsys):
    """One job for the whole session; ``hs`` is used by the later trace without ``.save()``; the
    printed tokens are a local session's."""
    model = gpt2

    def run(remote):
        with model.session(remote=remote):
            with model.trace("Megan Rapinoe plays the sport of"):
                hs = model.transformer.h[2].output[:, 5, :]  # No .save() needed!

            with model.trace() as tracer:
                with tracer.invoke("Shaquille O'Neal plays the sport of"):
                    out_clean = model.lm_head.output[0][-1].argmax(dim=-1).save()

                with tracer.invoke("Shaquille O'Neal plays the sport of"):
                    model.transformer.h[2].output[:, 6, :] = hs  # Direct reference
                    out_patched = model.lm_head.output[0][-1].argmax(dim=-1).save()

        print("Clean:", model.tokenizer.decode(out_clean))
        print("Patched:", model.tokenizer.decode(out_patched))
        return out_clean, out_patched

    remote = run(True)
    captured = capsys.readouterr()
    assert len(_job_ids(captured.err)) == 1  # a single request
    local = run(None)
    assert all(torch.equal(a, b) for a, b in zip(remote, local))
    assert captured.out == capsys.readouterr().out  # the same two printed lines


# -- gradients -----------------------------------------------------------------------------------


def test_gradients_remotely(gpt2_path, remote_config):
    """With ``requires_grad = True`` set on a hidden state, the backward pass runs on the server
    and the gradients equal a local run's (the local model, like the server's, has gradients off)."""
    model = LanguageModel(gpt2_path, dispatch=True)
    model.requires_grad_(False)

    def run(remote):
        with model.trace("The Eiffel Tower is in the city of", remote=remote):
            hs_3 = model.transformer.h[1].output
            hs_3.requires_grad = True  # Enable gradients from this point

            hs_5 = model.transformer.h[2].output
            logits = model.output.logits

            with logits.sum().backward():
                # Access gradients in reverse order
                logits_grad = logits.grad.save()
                hs_5_grad = hs_5.grad.save()
                hs_3_grad = hs_3.grad.save()
        return logits_grad, hs_5_grad, hs_3_grad

    remote = run(True)
    local = run(None)
    assert remote[1].shape == remote[2].shape == (1, 8, 64)
    assert all(torch.allclose(a, b) for a, b in zip(remote, local))


# -- python module whitelist ---------------------------------------------------------------------


def test_whitelisted_modules_run_on_the_server(gpt2, remote_config):
    """Code using approved modules (math, collections, numpy, torch) runs remotely and gives the
    local values, numpy array methods included (``ndarray.sum()`` imports a private numpy module
    from C through the job's importer: that is numpy's own import, not the request's)."""
    import collections
    import math

    import numpy

    def run(remote):
        with gpt2.trace("Hello", remote=remote):
            hidden = gpt2.transformer.h[0].output[0]
            scale = math.sqrt(hidden.shape[-1])
            counts = dict(collections.Counter([1, 1, 2])).save()  # a plain dict: dict subclasses do not travel yet
            root = numpy.sqrt(numpy.float64(16.0)).save()
            total = numpy.arange(4).sum().save()
            mean = numpy.arange(4).mean().save()
            scaled = (hidden / scale).save()
        return counts, root, scaled, total, mean

    remote, local = run(True), run(None)
    assert int(remote[3]) == 6 and float(remote[4]) == 1.5
    assert remote[0] == local[0] == {1: 2, 2: 1}
    assert float(remote[1]) == 4.0
    assert torch.equal(remote[2], local[2])


def test_referencing_local_modules(gpt2, remote_config, tmp_path, monkeypatch):
    """A helper module of the experiment, registered with
    ``cloudpickle.register_pickle_by_value``, is sent with the intervention and runs on the server
    (which cannot import it). cloudpickle's function takes the module object, not its name as the
    guide's placeholder string suggests."""
    cloudpickle = pytest.importorskip("cloudpickle")
    (tmp_path / "sec8_helpers.py").write_text("def double(x):\n    return x * 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import sec8_helpers

    cloudpickle.register_pickle_by_value(sec8_helpers)
    try:
        with gpt2.trace("Hello", remote=True):
            doubled = sec8_helpers.double(gpt2.lm_head.output).save()
        with gpt2.trace("Hello"):
            expected = (gpt2.lm_head.output * 2).save()
    finally:
        cloudpickle.unregister_pickle_by_value(sec8_helpers)
    assert torch.equal(doubled, expected)


# -- limitations ---------------------------------------------------------------------------------


def test_generator_output_in_remote_generation(gpt2, remote_config):
    """``model.generator.output.save()`` gives the generated ids remotely, as ``tracer.result``
    does locally."""
    model = gpt2
    # For remote generation:
    with model.generate("Hello", max_new_tokens=5, remote=True) as tracer:
        # Use model.generator.output instead of tracer.result
        output = model.generator.output.save()

    with model.generate("Hello", max_new_tokens=5) as tracer:
        expected = tracer.result.save()
    assert torch.equal(output, expected)


# -- hybrid execution with tracer.local() ---------------------------------------------------------


def test_hybrid_execution(gpt2, remote_config, capsys):
    """The ``tracer.local()`` block runs here with the server's hidden state and a local tensor;
    what it computes goes back and the server continues with it."""
    model = gpt2
    local_bias = torch.randn(64)  # Local tensor

    with model.trace("Hello", remote=True) as tracer:
        # This runs on NDIF
        hidden = model.transformer.h[2].output[0]

        # This runs locally on your machine
        with tracer.local():
            # Can use local tensors here
            modified = hidden + local_bias

            # Can also stream results as they're ready
            print("Got hidden states:", hidden.shape)

        # Back to remote execution
        model.transformer.h[2].output[0] = modified
        output = model.lm_head.output.save()

    with model.trace("Hello"):
        model.transformer.h[2].output[0] = model.transformer.h[2].output[0] + local_bias
        expected = model.lm_head.output.save()
    assert torch.allclose(output, expected, atol=1e-5)
    assert "Got hidden states: torch.Size([" in capsys.readouterr().out


# -- print statements and logging ----------------------------------------------------------------


def test_print_statements_arrive_as_log_lines(gpt2, remote_config, capsys):
    """Each ``print`` in the remote trace is shown here, as a LOG line of the job."""
    model = gpt2
    with model.trace("Hello", remote=True):
        hidden = model.transformer.h[2].output[0]
        print(f"Hidden shape: {hidden.shape}")  # Appears as LOG status
        print(f"Hidden mean: {hidden.mean()}")

    with model.trace("Hello"):
        hidden = model.transformer.h[2].output[0]
        shape, mean = hidden.shape.save(), hidden.mean().save()
    captured = capsys.readouterr()
    (job_id,) = _job_ids(captured.err)
    logged = [line for line in (captured.out + captured.err).splitlines() if " LOG " in line]
    assert logged == [f"[{job_id}] LOG        : Hidden shape: {shape}",
                      f"[{job_id}] LOG        : Hidden mean: {mean}"], captured


# -- implementation details: blocking and non-blocking execution ---------------------------------


def test_blocking_execution(gpt2, remote_config, capsys):
    """The trace waits for the job: the saved value is there as soon as it exits (here
    ``model.output.logits``; the whole ``model.output`` is the next test)."""
    model = gpt2
    # Blocking (default) - waits for completion
    with model.trace("Hello", remote=True):
        output = model.output.logits.save()

    print(output)  # Available immediately after trace exits
    with model.trace("Hello"):
        expected = model.output.logits.save()
    assert torch.equal(output, expected)
    assert capsys.readouterr().out.startswith("tensor(")


def test_blocking_execution_saving_the_whole_model_output(gpt2, remote_config):
    """As written: ``model.output.save()`` remotely gives the same ModelOutput as locally (its
    class, its items, its ``None`` fields and its key/value cache)."""
    model = gpt2
    with model.trace("Hello", remote=True):
        output = model.output.save()
    with model.trace("Hello"):
        expected = model.output.save()
    assert type(output) is type(expected)
    assert list(output.keys()) == list(expected.keys()) == ["logits", "past_key_values"]
    assert torch.equal(output.logits, expected.logits) and output.logits is output["logits"]
    assert output.loss is None and output.hidden_states is None
    assert type(output.past_key_values) is type(expected.past_key_values)
    for got, want in zip(output.past_key_values.layers, expected.past_key_values.layers):
        assert torch.equal(got.keys, want.keys) and torch.equal(got.values, want.values)
    assert torch.equal(output[0], expected[0])


def test_non_blocking_execution(gpt2, remote_config, capsys):
    """The trace returns at once with a job id; ``backend()`` is None until the job is done, then
    the dict of saved names plus ``'id'``; ``backend.job_status`` is a ``JobStatus``."""
    from nnsight.remote import JobStatus

    model = gpt2
    # Non-blocking - returns immediately
    with model.trace("Hello", remote=True, blocking=False) as tracer:
        output = model.lm_head.output.save()  # noqa: F841 - as written: it comes back in backend()

    # Trace exits immediately, job is queued on server
    backend = tracer.backend  # Get the RemoteBackend
    print(backend.job_id)      # UUID of the job
    print(backend.job_status)  # JobStatus.RECEIVED initially

    first_status = backend.job_status
    # Poll for result
    import time
    while True:
        result = backend()  # Returns None if not complete
        if result is not None:
            break
        print(f"Status: {backend.job_status}")  # QUEUED, RUNNING, etc.
        time.sleep(1)

    # Result is a dict with saved variable names as keys
    print(result.keys())        # dict_keys(['id', 'output'])
    print(result['output'].shape)  # The saved tensor

    with model.trace("Hello"):
        expected = model.lm_head.output.save()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == backend.job_id and re.fullmatch(r"[0-9a-f-]{32,36}", backend.job_id)
    # submitted: received, and (the server answers once it is persisted) already queued
    assert out[1] == str(first_status) and first_status in (JobStatus.RECEIVED, JobStatus.QUEUED)
    assert out[1] in ("JobStatus.RECEIVED", "JobStatus.QUEUED")
    assert all(line.startswith("Status: JobStatus.") for line in out[2:-2])
    assert sorted(result.keys()) == ["id", "output"] and result["id"] == backend.job_id
    assert torch.equal(result["output"], expected)
    assert out[-1] == str(expected.shape)
    assert backend.job_status is JobStatus.COMPLETED and backend.job_status == "COMPLETED"


# -- implementation details: model key, request, session bundling -------------------------------


def test_model_key_format(gpt2_path, remote_config):
    """A model is named by ``import.path.ClassName:json_payload``: the class to build on the
    server and its init parameters (repo id, revision); the server resolves it to the hosted model."""
    from nnsight.tracing.remote import model_key

    model = LanguageModel(gpt2_path, revision="main")
    key = model_key(model)
    path, payload = key.split(":", 1)
    module, _, cls = path.rpartition(".")
    assert getattr(__import__(module, fromlist=[cls]), cls) is LanguageModel
    assert json.loads(payload) == {"repo_id": gpt2_path, "revision": "main"}
    with model.trace("Hello", remote=True):  # the server finds the hosted model by this key
        out = model.lm_head.output.save()
    assert out.ndim == 3


def test_request_headers(gpt2, remote_config):
    """A request carries the API key, the nnsight version and the Python version as headers;
    the compiled intervention is the encoded request body (``tracer.remote_payload``). Adapted:
    the guide's internal sketch (``RequestModel(...).serialize(zlib=True)``, a model-key header)
    is not an API here; the model key travels inside the body, and the body is the project's IR
    encoding, not cloudpickle."""
    import platform

    from nnsight.remote.client import KEY_HEADER, Client

    with Client() as client:
        assert client.headers[KEY_HEADER] == remote_config.API.APIKEY
        assert client.headers["python-version"] == platform.python_version()
        assert client.headers["nnsight-version"] == nnsight.__version__
    with gpt2.trace("Hello", remote=True) as tracer:
        gpt2.lm_head.output.save()
    from compiler.ir.request import decode_request
    from nnsight.tracing.remote import model_key

    request = decode_request(tracer.remote_payload)
    assert request.model == model_key(gpt2) and request.method == "trace"


def test_session_bundling(gpt2, remote_config, capsys):
    """All traces of a session are one request, run in order on the server; a later trace uses
    an earlier one's value directly."""
    model = gpt2

    def run(remote):
        with model.session(remote=remote):
            # All traces in this block become one remote request
            with model.trace("Hello"):
                hs = model.transformer.h[2].output  # No .save() needed

            with model.trace("World"):
                model.transformer.h[2].output = hs  # Can reference directly
                output = model.lm_head.output.save()
        return output

    remote = run(True)
    assert len(_job_ids(capsys.readouterr().err)) == 1
    assert torch.equal(remote, run(None))
