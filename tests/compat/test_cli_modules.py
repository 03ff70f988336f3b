"""``nnsight-compile check mylib.stats`` from the folder that holds ``mylib``; ``emit DIR`` like ``check DIR``.

Run as the installed console script would be: a subprocess whose ``sys.path``
does not hold the current folder (``python -c`` with ``-I``-like path
handling), so the module form must look in the current folder itself.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from compiler.cli import main
from compiler.ir import parse_program, verify

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The console script's first sys.path entry is its bin folder, never the current folder.
CONSOLE = ("import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
           "sys.path.insert(0, %r); from compiler.cli import main; sys.exit(main())" % ROOT)

STATS = """\
import os
import math


def mean(xs):
    return sum(xs) / len(xs)


def cwd():
    return os.getcwd()
"""

TRACE = """\
from nnsight import LanguageModel

model = LanguageModel("gpt2")


def run(prompt):
    with model.trace(prompt):
        h = model.transformer.h[0].output.save()
    return h
"""


@pytest.fixture
def project(tmp_path):
    """``tmp/mylib/{__init__,stats}.py`` and ``tmp/scripts/{a,b,notrace}.py``."""
    (tmp_path / "mylib").mkdir()
    (tmp_path / "mylib" / "__init__.py").write_text("")
    (tmp_path / "mylib" / "stats.py").write_text(STATS)
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "a.py").write_text(TRACE)
    (tmp_path / "scripts" / "b.py").write_text(TRACE.replace("h[0]", "h[1]"))
    (tmp_path / "scripts" / "notrace.py").write_text("x = 1\n")
    return tmp_path


def console(args, cwd):
    env = dict(os.environ, PYTHONPATH="")
    p = subprocess.run([sys.executable, "-c", CONSOLE] + list(args), cwd=str(cwd), env=env,
                       capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def test_check_module_form_from_the_folder_that_holds_the_package(project):
    code, out, err = console(["check", "--format", "json", "mylib.stats"], project)
    assert code == 1, err
    data = json.loads(out)
    assert data["summary"]["files"] == 1
    (d,) = data["diagnostics"]
    assert (d["path"], d["line"], d["code"]) == (os.path.join("mylib", "stats.py"), 1, "NN201")
    # the package form checks every file of the package; the same file by path gives the same report
    code, out, _ = console(["check", "--format", "json", "mylib"], project)
    assert json.loads(out)["summary"]["files"] == 2
    _, by_path, _ = console(["check", "--format", "json", os.path.join("mylib", "stats.py")], project)
    assert json.loads(by_path)["diagnostics"] == data["diagnostics"]


def test_check_module_form_names_what_it_could_not_find(project):
    code, _, err = console(["check", "mylib.nosuch"], project)
    assert code == 2 and "'mylib.nosuch'" in err and "current folder" in err
    code, _, err = console(["check", "mylib.stats"], project / "scripts")  # not the folder that holds mylib
    assert code == 2 and "'mylib.stats'" in err


def test_emit_directory_like_check_directory(project, capsys, monkeypatch):
    monkeypatch.chdir(project)
    code = main(["emit", "scripts"])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    headers = [line for line in out.splitlines() if line.startswith("# ")]
    assert headers == ["# %s:7" % os.path.join("scripts", "a.py"), "# %s:7" % os.path.join("scripts", "b.py")]
    chunks = [chunk.split("\n", 1)[1] for chunk in ("\n" + out).split("\n# ")[1:]]
    for chunk in chunks:
        verify(parse_program(chunk.rstrip("\n") + "\n"))
    assert len(chunks) == 2
    assert "h[0].output" in chunks[0] and "h[1].output" in chunks[1]


def test_emit_directory_binary_and_errors(project, capsys, monkeypatch):
    monkeypatch.chdir(project)

    def emit(*args):
        code = main(["emit"] + list(args))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = emit("scripts", "--binary", "out.nnir")
    assert code == 0, err
    assert os.path.exists(project / "out-1.nnir") and os.path.exists(project / "out-2.nnir")
    (project / "scripts" / "broken.py").write_text("with model.trace(:\n    pass\n")
    code, out, err = emit("scripts")
    assert code == 1 and "NN101" in err and out.count("# scripts") == 2  # the other files still print
    code, _, err = emit("mylib")
    assert code == 1 and "no tracing with-block found in mylib" in err
    code, _, err = emit("--line", "7", "scripts")
    assert code == 2 and "--line needs exactly one file" in err
    code, out, _ = emit("--line", "7", os.path.join("scripts", "a.py"))
    assert code == 0 and out.startswith("# %s:7" % os.path.join("scripts", "a.py"))
