"""remote='local' refuses what a server refuses, with diagnostics pointing at the user's code.

The rendered diagnostics are compared with golden files in
tests/golden/diagnostics/remote_local/ (regenerate with ``UPDATE_GOLDEN=1``).
The traces live in a generated ``scenarios`` module, so line numbers are stable.
"""
import dataclasses
import os
from pathlib import Path

import pytest
import torch

import nnsight
from compiler import policy
from compiler.diagnostics import DiagnosticError
from remote_helpers import relative

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "diagnostics" / "remote_local"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def rejected(fn, *args):
    with pytest.raises(DiagnosticError) as info:
        fn(*args)
    return info.value.diagnostics


def render(diagnostics, libdir):
    return "\n\n".join(dataclasses.replace(d, path=relative(d.path, libdir)).render()
                       for d in diagnostics) + "\n"


def check_golden(name, diagnostics, libdir):
    text = render(diagnostics, libdir)
    path = GOLDEN / (name + ".txt")
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), "missing golden file %s (run with UPDATE_GOLDEN=1)" % path
    assert text == path.read_text(encoding="utf-8"), "%s changed; rerun with UPDATE_GOLDEN=1 if intended" % name


# -- in the trace body ---------------------------------------------------------------------------


@pytest.mark.parametrize("scenario, code, where", [
    ("import_os", "NN201", "import os"),
    ("uses_os", "NN201", "os"),
    ("calls_eval", "NN301", "eval"),
    ("calls_open", "NN301", "open"),
    ("uses_yaml", "NN202", "yaml"),
    ("uses_torch_hub", "NN401", "torch.hub.list"),
])
def test_trace_body_rejections(scenarios, libdir, mlp, x, scenario, code, where):
    (d,) = rejected(getattr(scenarios, scenario), mlp, x)
    assert d.code == code and d.severity == "error" and d.hint
    assert d.path == str(libdir / "scenarios.py")
    assert d.source_line[d.col:].startswith(where), (d.source_line, d.col)
    check_golden("trace_" + scenario, [d], libdir)


def test_messages_give_reason_and_fix(scenarios, mlp, x):
    (d,) = rejected(scenarios.uses_os, mlp, x)
    assert "module 'os'" in d.message and "not available on the server" in d.message
    assert "operating system" in d.message
    (d,) = rejected(scenarios.uses_yaml, mlp, x)
    assert "installed here but not provided by the server" in d.message and "nnsight.register('yaml')" in d.hint
    (d,) = rejected(scenarios.calls_eval, mlp, x)
    assert d.message == "builtin 'eval' is not available on the server: runs arbitrary code"


# -- in captured library code --------------------------------------------------------------------


@pytest.mark.parametrize("function, code, where", [
    ("cwd_len", "NN201", "os"),
    ("run", "NN201", "subprocess"),
    ("evaluate", "NN301", "eval"),
    ("read", "NN301", "open"),
    ("parse", "NN202", "yaml"),
    ("download", "NN401", "torch.hub.list"),
    ("copy_later", "NN201", "import shutil"),
])
def test_library_rejections_point_into_the_library(scenarios, badlib, libdir, mlp, x, function, code, where):
    (d,) = rejected(scenarios.library, mlp, x, getattr(badlib, function))
    assert d.code == code
    assert d.path == str(libdir / "badlib.py")
    assert d.source_line[d.col:].startswith(where), (d.source_line, d.col)
    check_golden("library_" + function, [d], libdir)


def test_all_problems_are_reported_at_once(scenarios, libdir, mlp, x):
    ds = rejected(scenarios.many, mlp, x)
    assert [d.code for d in ds] == ["NN301", "NN201", "NN301"]  # sorted by file and position
    check_golden("many", ds, libdir)


def test_unencodable_value_names_object_type_and_place(scenarios, libdir, mlp, x):
    (d,) = rejected(scenarios.unencodable, mlp, x)
    assert d.code == "NN501" and "'LOCK'" in d.message and "_thread.lock" in d.message
    assert d.path == str(libdir / "scenarios.py") and d.source_line[d.col:].startswith("LOCK")
    check_golden("unencodable", [d], libdir)


def test_unencodable_nested_value_says_where_inside(mlp, x):
    import threading

    config = {"layers": [1, 2], "lock": threading.Lock()}
    with pytest.raises(DiagnosticError) as info:
        with mlp.trace(x, remote="local"):
            out = (mlp.output * config["layers"][0]).save()
    (d,) = info.value.diagnostics
    assert d.code == "NN501" and "['lock']" in d.message and "_thread.lock" in d.message
    assert d.path == __file__ and "config" in d.source_line


def test_local_execution_is_never_restricted(scenarios, mlp, x):
    out = scenarios.same_without_remote(mlp, x)
    with mlp.trace(x):
        expected = mlp.output.save()
    assert torch.allclose(out, expected * len(os.sep) * 2)


def test_another_models_envoy_is_refused(mlp, x):
    from nnsight import NNsight

    from remote_helpers import make_mlp

    other = NNsight(make_mlp(seed=3))
    with pytest.raises(DiagnosticError, match="NN504") as info:
        with mlp.trace(x, remote="local"):
            out = (mlp.output + other[0].weight.sum()).save()
    assert "another model" in info.value.diagnostics[0].message


# -- nnsight.register ------------------------------------------------------------------------------


def test_register_sends_an_installed_package_by_value(libdir, mlp, x):
    import fakepkg

    assert policy.classify_module("fakepkg") == policy.INSTALLED
    with pytest.raises(DiagnosticError, match="NN202"):
        with mlp.trace(x, remote="local"):
            out = fakepkg.triple(mlp.output).save()
    nnsight.register(fakepkg)
    try:
        assert policy.classify_module("fakepkg") == policy.USER
        assert policy.classify_module("fakepkg.sub") == policy.USER  # every module of the package
        with mlp.trace(x, remote="local") as tracer:
            out = fakepkg.triple(mlp.output).save()
        with mlp.trace(x):
            expected = mlp.output.save()
        assert torch.allclose(out, expected * 3)
        assert b"def triple" in _decompressed(tracer.remote_payload)
    finally:
        policy.unregister("fakepkg")


def _decompressed(payload):
    from compiler.ir.request import decode_request
    from compiler.ir.printer import print_program

    return print_program(decode_request(payload).program).encode()


def test_register_refuses_server_and_dangerous_modules():
    with pytest.raises(ValueError, match="provided by the server"):
        nnsight.register("torch")
    with pytest.raises(ValueError, match="not available on the server"):
        nnsight.register("os")
    with pytest.raises(ValueError):
        nnsight.register("not a name")


def test_policy_table():
    assert policy.classify_module("torch") == policy.SERVER
    assert policy.classify_module("torch.nn.functional") == policy.SERVER
    assert policy.classify_module("torch.hub") == policy.DANGEROUS
    assert policy.classify_module("einops") == policy.SERVER
    assert policy.classify_module("collections.abc") == policy.SERVER
    assert policy.classify_module("json") == policy.SERVER
    for name in ("os", "os.path", "subprocess", "socket", "shutil", "importlib", "ctypes", "pickle", "email"):
        assert policy.classify_module(name) == policy.DANGEROUS, name
    assert policy.classify_module("yaml") == policy.INSTALLED
    assert policy.classify_module("surely_not_a_module_xyz") == policy.USER
    assert {"eval", "exec", "compile", "open", "__import__"} <= set(policy.DANGEROUS_BUILTINS)
    assert policy.VERSION >= 1
