"""The static remotability checker (compiler.analysis): rules, inputs, and no code execution."""
import os
import sys
import textwrap

import pytest

from compiler.analysis import CODES, TargetError, check_paths, check_source, server
from compiler.analysis.codes import table_markdown

FAKE_KINDS = {
    "os": "dangerous", "subprocess": "dangerous", "socket": "dangerous", "builtins": "server",
    "torch": "server", "torch.hub": "dangerous", "math": "server", "typing": "server",
    "json": "server", "requests": "installed",
}
FAKE_BUILTINS = {"eval": "runs arbitrary code", "exec": "runs arbitrary code", "open": "touches files",
                 "compile": "compiles code", "__import__": "imports any module"}


def fake_kind(name):
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        kind = FAKE_KINDS.get(".".join(parts[:i]))
        if kind:
            return kind
    return "user"


@pytest.fixture
def fake_policy(monkeypatch):
    """Rule tests run against a fixed policy, independent of the server data file."""
    monkeypatch.setattr(server, "module_kind", fake_kind)
    monkeypatch.setattr(server, "dangerous_builtins", lambda: FAKE_BUILTINS)
    monkeypatch.setattr(server, "module_reason", lambda name: "touches the file system")


def found(src, **kw):
    return [(d.code, d.line, d.col) for d in check_source(textwrap.dedent(src), **kw)]


def codes_of(src, **kw):
    return [d.code for d in check_source(textwrap.dedent(src), **kw)]


# -- imports -------------------------------------------------------------------------------


def test_dangerous_import_reported_once_not_its_uses(fake_policy):
    src = """\
    import os.path as p
    from os import getcwd
    x = p.join(getcwd(), "a")
    """
    assert found(src) == [("NN201", 1, 7), ("NN201", 2, 5)]
    d = check_source(textwrap.dedent(src))[0]
    assert d.message == "module 'os.path' is not available on the server: touches the file system"
    assert d.length == len("os.path") and d.severity == "error"


def test_installed_module_is_an_error_and_the_hint_names_register_for_pure_python(fake_policy):
    (d,) = check_source("import requests\n")
    assert d.code == "NN202" and d.severity == "error"
    assert "nnsight.register(package)" in d.hint and "guaranteed modules" in d.hint


def test_server_user_future_and_type_checking_imports_are_fine(fake_policy, tmp_path):
    (tmp_path / "my_own_module.py").write_text("X = 1\n")
    src = """\
    from __future__ import annotations
    import math, torch
    import torch.nn.functional as F
    from typing import TYPE_CHECKING
    import my_own_module
    if TYPE_CHECKING:
        import socket
    elif math:
        import json
    else:
        import subprocess
    """
    assert found(src, base_dir=str(tmp_path)) == [("NN201", 11, 11)]


def test_dangerous_submodule_through_allowed_module(fake_policy):
    src = """\
    import torch
    model = torch.hub.load("x", "y")
    again = torch.hub.list("x")
    """
    assert found(src) == [("NN401", 2, 8)]
    assert found("from torch import nn, hub\nhub.load('x')\n") == [("NN201", 1, 22)]


def test_extension_modules_cannot_be_captured(fake_policy, tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "_fast.so").write_text("")
    (tmp_path / "native.so").write_text("")
    (pkg / "mod.py").write_text("from . import _fast\nfrom ._fast import f\nimport native\nfrom . import mod\n"
                                "from pkg import _fast, mod\nimport pkg.mod\n")
    report = check_paths([str(pkg / "mod.py")])
    assert [(d.code, d.line, d.col) for d in report.diagnostics] == [
        ("NN203", 1, 14), ("NN203", 2, 6), ("NN203", 3, 7), ("NN203", 5, 16)]


# -- builtins and attributes -----------------------------------------------------------------


def test_dangerous_builtins_by_name_not_when_shadowed(fake_policy):
    src = """\
    def f(open, x):
        return open(x)
    def compile(s):
        return s
    y = compile("x") + eval("1")
    g = exec
    import builtins
    builtins.open("f")
    from builtins import __import__ as imp
    """
    assert found(src) == [("NN301", 5, 19), ("NN301", 6, 4), ("NN301", 8, 0)]


def test_interactive_and_namespace_builtins_warn(fake_policy):
    ds = check_source("breakpoint()\nx = input()\ny = globals(), locals(), vars()\n")
    assert [(d.code, d.severity) for d in ds] == [("NN302", "warning")] * 2 + [("NN303", "warning")] * 3


def test_introspection_and_dunder_tricks_are_errors(fake_policy):
    """The server refuses these (runtime/loader), so the checker reports them as errors."""
    src = """\
    a = f.__globals__
    b = __builtins__
    c = getattr(f, "__code__")
    setattr(f, "__class__", int)
    ok = hasattr(x, "__iter__"), getattr(x, "name"), x.__class__, x.__name__
    d = hasattr(frame, "f_globals")
    e = sys._getframe().f_back
    n = x.__dict__
    """
    assert found(src) == [("NN402", 1, 6), ("NN402", 2, 4), ("NN403", 3, 15), ("NN403", 4, 11),
                          ("NN403", 6, 19), ("NN402", 7, 20), ("NN402", 8, 6)]
    assert all(d.severity == "error" for d in check_source(textwrap.dedent(src)))


# -- syntax ---------------------------------------------------------------------------------


def test_syntax_newer_than_target(fake_policy):
    src = """\
    match x:
        case 1:
            pass
    def f[T](x: T) -> T:
        return x
    """
    assert found(src) == [("NN102", 1, 0), ("NN102", 4, 0)]
    assert found(src, target=(3, 11)) == [("NN102", 4, 0)]
    assert found(src, target=(3, 12)) == []
    d = check_source(textwrap.dedent(src), target=(3, 11))[0]
    assert d.message == "type parameters requires Python 3.12; the target is Python 3.11"


def test_syntax_error(fake_policy):
    (d,) = check_source("def ok():\n    return 1\n\nx = = 2\n", path="bad.py")
    assert (d.code, d.line, d.col, d.path) == ("NN101", 4, 4, "bad.py")
    assert d.source_line == "x = = 2"


# -- inputs ---------------------------------------------------------------------------------


def test_directory_is_checked_recursively(fake_policy, tmp_path):
    (tmp_path / "a.py").write_text("import os\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("eval('1')\n")
    for skipped in ("__pycache__", ".git", "venv"):
        (tmp_path / skipped).mkdir()
        (tmp_path / skipped / "c.py").write_text("import os\n")
    (tmp_path / "venv" / "pyvenv.cfg").write_text("")
    report = check_paths([str(tmp_path)])
    assert report.files == 2
    assert [(os.path.relpath(d.path, str(tmp_path)), d.code) for d in report.diagnostics] == [
        ("a.py", "NN201"), (os.path.join("sub", "b.py"), "NN301")]
    assert report.summary() == "2 errors, 0 warnings in 2 files"


def test_unknown_input_is_a_target_error():
    with pytest.raises(TargetError):
        check_paths(["no/such/file.py"])
    with pytest.raises(TargetError):
        check_paths(["no_such_module_xyz_123"])


def test_module_names_are_located_without_importing(fake_policy, tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    pkg = tmp_path / "sideeffect_pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("open(%r, 'w').close()\n" % str(marker))
    (pkg / "sub" / "__init__.py").write_text("open(%r, 'w').close()\nimport os\n" % str(marker))
    monkeypatch.syspath_prepend(str(tmp_path))
    report = check_paths(["sideeffect_pkg.sub"])
    assert not marker.exists() and "sideeffect_pkg" not in sys.modules
    assert [d.code for d in report.diagnostics] == ["NN301", "NN201"]
    assert report.files == 1


# -- the real server policy ------------------------------------------------------------------


def test_real_policy_stdlib_json_is_clean():
    report = check_paths(["json"])
    assert report.errors == 0 and report.warnings == 0
    assert [d.code for d in report.diagnostics] == ["NN200"]


def test_real_policy_installed_third_party_module_has_errors():
    report = check_paths(["msgpack"])  # a compiler dependency, so always installed
    assert report.errors >= 1
    assert report.diagnostics[0].code == "NN202" and report.files >= 1


def test_real_policy_dangerous_module_and_builtins():
    ds = check_source("import os\nimport subprocess\nx = eval('1')\nexec('y = 1')\nopen('f')\n")
    assert [d.code for d in ds] == ["NN201", "NN201", "NN301", "NN301", "NN301"]


def test_code_table_is_documented():
    doc = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "remotable-python.md")).read()
    assert table_markdown() in doc
    for code in CODES:
        assert "### %s" % code in doc, code


def test_server_policy_is_documented():
    from compiler import policy

    doc = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "remotable-python.md")).read()
    tables = (policy.SERVER_MODULES, policy.HARMLESS_STDLIB, policy.DANGEROUS_MODULES, policy.DANGEROUS_BUILTINS)
    missing = [name for table in tables for name in table if "`%s`" % name not in doc]
    assert not missing, "docs/remotable-python.md does not mention %s" % missing
