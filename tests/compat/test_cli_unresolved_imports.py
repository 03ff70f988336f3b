"""An import that resolves to nothing (not installed, not the user's, not the server's) is NN204.

Reported by ``nnsight-compile check`` and by the remote='local' closure, at the
import, with a hint that says how to fix it; an import guarded by
``try: ... except ImportError:`` is the code's own fallback and is not reported
(on the server it fails the same way, and the same handler catches it).
"""
import importlib
import json
import sys
import textwrap

import pytest
import torch

import nnsight
from compiler.cli import main
from compiler.diagnostics import DiagnosticError
from nnsight import NNsight

LIB = """\
def needs_missing(x):
    import nnsight_no_such_pkg
    return nnsight_no_such_pkg.scale(x)


def optional_missing(x):
    try:
        import nnsight_no_such_pkg
    except ImportError:
        return x * 2
    return nnsight_no_such_pkg.scale(x)


def uses_sibling(x):
    import nnsight_unres_sibling
    return nnsight_unres_sibling.VALUE + x
"""


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    root = tmp_path_factory.mktemp("unresolved")
    (root / "nnsight_unres_lib.py").write_text(LIB)
    (root / "nnsight_unres_sibling.py").write_text("VALUE = 3\n")
    sys.path.insert(0, str(root))
    yield root, importlib.import_module("nnsight_unres_lib")
    sys.path.remove(str(root))
    for name in ("nnsight_unres_lib", "nnsight_unres_sibling"):
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 4))


@pytest.fixture(scope="module")
def model(net):
    return NNsight(net)


def check(path, capsys):
    code = main(["check", "--format", "json", str(path)])
    return code, json.loads(capsys.readouterr().out)["diagnostics"]


def test_check_reports_an_import_that_resolves_to_nothing(tmp_path, capsys):
    path = tmp_path / "job.py"
    path.write_text(textwrap.dedent("""\
        import math
        import nnsight_no_such_pkg
        from nnsight_no_such_pkg.sub import thing
        import local_helper
        try:
            import nnsight_optional_pkg
        except (ImportError, AttributeError):
            nnsight_optional_pkg = None
        try:
            import nnsight_unguarded_pkg
        except KeyError:
            pass
        """))
    (tmp_path / "local_helper.py").write_text("X = 1\n")
    code, ds = check(path, capsys)
    assert code == 1
    assert [(d["code"], d["line"], d["col"]) for d in ds] == [("NN204", 2, 7), ("NN204", 3, 5), ("NN204", 10, 11)]
    d = ds[0]
    assert d["severity"] == "error" and d["length"] == len("nnsight_no_such_pkg")
    assert d["message"] == ("module 'nnsight_no_such_pkg' is not installed here and is not provided by the "
                            "server: importing it fails")
    for fix in ("install", "nnsight.register", "remove the import", "PYTHONPATH"):
        assert fix in d["hint"]


def test_remote_local_trace_body_import_is_refused_at_the_import(model):
    x = torch.randn(2, 4)
    with pytest.raises(DiagnosticError) as info:
        with model.trace(x, remote="local"):
            import nnsight_no_such_pkg
            out = nnsight.save(nnsight_no_such_pkg.VALUE)
    (d,) = info.value.diagnostics
    assert d.code == "NN204" and d.path == __file__ and d.hint
    assert d.source_line.strip() == "import nnsight_no_such_pkg"


def test_remote_local_library_import_is_refused_in_the_library(lib, model):
    root, mod = lib
    x = torch.randn(2, 4)
    with pytest.raises(DiagnosticError) as info:
        with model.trace(x, remote="local"):
            out = nnsight.save(mod.needs_missing(model.output))
    (d,) = info.value.diagnostics
    assert d.code == "NN204" and d.path == str(root / "nnsight_unres_lib.py") and d.line == 2
    assert "nnsight_no_such_pkg" in d.message


def test_remote_local_guarded_import_and_own_modules_still_run(lib, net, model):
    _, mod = lib
    x = torch.randn(2, 4)
    with model.trace(x, remote="local"):
        doubled = nnsight.save(mod.optional_missing(model.output))
    assert torch.allclose(doubled, net(x) * 2)
    with pytest.raises(ModuleNotFoundError, match="nnsight_unres_sibling"):
        # a module of the user's that the function imports at call time is not captured: the
        # server does not have it (NN204 is only for modules found nowhere)
        with model.trace(x, remote="local"):
            out = nnsight.save(mod.uses_sibling(model.output))
