"""CONFIG: defaults < per-user file < environment < code; DEBUG; CROSS_INVOKER."""
import json
import os
import stat
import traceback

import pytest
import torch

from dbg_helpers import frames, normalise
from nnsight import CONFIG, NNsight
from nnsight.config import Config, config_path
from nnsight.tracing import tracebacks


def write(path, data):
    path.write_text(json.dumps(data))
    return str(path)


def test_defaults(tmp_path):
    c = Config().load(str(tmp_path / "none.json"), environ={})
    assert (c.APP.DEBUG, c.APP.CROSS_INVOKER, c.APP.PYMOUNT, c.APP.REMOTE_LOGGING) == (False, True, True, True)
    assert (c.API.HOST, c.API.APIKEY) == ("localhost:8000", "")


def test_precedence_file_env_code(tmp_path):
    path = write(tmp_path / "c.json", {"APP": {"DEBUG": True, "REMOTE_LOGGING": False},
                                       "API": {"HOST": "file:1", "APIKEY": "file-key"}})
    c = Config().load(path, environ={"NNSIGHT_HOST": "env:2", "NNSIGHT_REMOTE_LOGGING": "yes"})
    assert c.APP.DEBUG is True  # file over default
    assert c.APP.REMOTE_LOGGING is True  # env over file
    assert c.API.HOST == "env:2"
    assert c.API.APIKEY == "file-key"
    c.API.HOST = "code:3"  # code over everything
    assert c.API.HOST == "code:3"


@pytest.mark.parametrize("raw,value", [("1", True), ("true", True), ("On", True), ("0", False), ("no", False),
                                       ("", False)])
def test_boolean_environment_values(tmp_path, raw, value):
    c = Config().load(str(tmp_path / "none.json"), environ={"NNSIGHT_DEBUG": raw})
    assert c.APP.DEBUG is value


def test_bad_environment_value_names_the_variable(tmp_path):
    with pytest.raises(ValueError, match="NNSIGHT_CROSS_INVOKER"):
        Config().load(str(tmp_path / "none.json"), environ={"NNSIGHT_CROSS_INVOKER": "maybe"})


def test_save_persists_code_values_not_environment_ones(tmp_path):
    path = tmp_path / "sub" / "config.json"
    c = Config().load(str(path), environ={"NNSIGHT_API_KEY": "from-env"})
    c.APP.DEBUG = True
    assert c.save() == str(path)
    data = json.loads(path.read_text())
    assert data["APP"]["DEBUG"] is True
    assert "APIKEY" not in data["API"]  # only the environment had it
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = Config().load(str(path), environ={})
    assert again.APP.DEBUG is True and again.API.APIKEY == ""


def test_set_default_api_key_persists(tmp_path):
    path = tmp_path / "config.json"
    c = Config().load(str(path), environ={"NNSIGHT_API_KEY": "env-key"})
    c.set_default_api_key("my-key-123456")
    assert json.loads(path.read_text())["API"]["APIKEY"] == "my-key-123456"
    assert Config().load(str(path), environ={}).API.APIKEY == "my-key-123456"
    assert "my-key-123456" not in repr(c)


def test_config_path(monkeypatch, tmp_path):
    monkeypatch.setenv("NNSIGHT_CONFIG", str(tmp_path / "explicit.json"))
    assert config_path() == str(tmp_path / "explicit.json")
    monkeypatch.delenv("NNSIGHT_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_path() == str(tmp_path / "xdg" / "nnsight" / "config.json")


def test_python_dash_d_file_and_environment_at_import(runs):
    """`python -d`, NNSIGHT_CONFIG (CROSS_INVOKER, HOST, APIKEY) and NNSIGHT_HOST, in a real child."""
    code, out, err = runs["debug_flag"]
    assert code == 1
    line = next(l for l in out.splitlines() if l.startswith("CONFIG "))
    assert json.loads(line[7:]) == {"DEBUG": True, "CROSS_INVOKER": False, "HOST": "env-host:2",
                                    "APIKEY": "file-key"}
    files = [f[0] for f in frames(err)]
    assert "<ROOT>/runtime/mediator.py" in files and "<ROOT>/nnsight/tracing/base.py" in files
    assert frames(err)[-1][3] == "picked = model[0].output[100]"
    assert err.rstrip().endswith("IndexError: index 100 is out of bounds for dimension 0 with size 2")


def test_debug_in_code_keeps_internal_frames(monkeypatch):
    model = NNsight(torch.nn.Sequential(torch.nn.Linear(4, 4)))
    x = torch.randn(2, 4)
    monkeypatch.setattr(CONFIG.APP, "DEBUG", True)
    with pytest.raises(IndexError) as info:
        with model.trace(x):
            model[0].output[100]
    exc = info.value
    text = normalise("".join(traceback.format_exception(type(exc), exc, tracebacks.for_display(exc))))
    assert "<ROOT>/runtime/mediator.py" in text
    assert "During handling" not in text


# ------------------------------------------------------------------ CROSS_INVOKER

def _two_invokes(model, x):
    with model.trace() as tracer:
        with tracer.invoke(x):
            first = model[0].output.save()
        with tracer.invoke(x):
            second = (model[2].output + first).save()
    return first, second


def test_cross_invoker_shares_variables_by_default():
    model = NNsight(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4)))
    first, second = _two_invokes(model, torch.randn(2, 4))
    assert first.shape == second.shape == (2, 4)


def test_cross_invoker_false_isolates_invokes(monkeypatch):
    model = NNsight(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4)))
    x = torch.randn(2, 4)
    monkeypatch.setattr(CONFIG.APP, "CROSS_INVOKER", False)
    with pytest.raises(NameError, match="'first' is not defined"):
        _two_invokes(model, x)
    with model.trace() as tracer:  # saved values still come back from every invoke
        with tracer.invoke(x):
            a = model[0].output.save()
        with tracer.invoke(x):
            b = model[2].output.save()
    assert a.shape == b.shape == (2, 4)
