"""nnsight-compile: check output (golden text and JSON), exit codes, emit, other Pythons.

Regenerate the goldens with ``UPDATE_GOLDEN=1``.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from compiler.cli import main
from compiler.ir import decode, parse_program, print_program, verify

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOLDEN = os.path.join(ROOT, "tests", "golden", "diagnostics")
SAMPLE = "samplelib"  # checked from inside GOLDEN, so paths in the output are relative


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def golden(name, actual):
    path = os.path.join(GOLDEN, name)
    if os.environ.get("UPDATE_GOLDEN"):
        with open(path, "w", encoding="utf-8") as f:
            f.write(actual)
    with open(path, encoding="utf-8") as f:
        assert actual == f.read(), "output differs from %s (UPDATE_GOLDEN=1 regenerates)" % path


def _extension_stub():
    """The sample's fake compiled module (an empty ``.so``, in case a global gitignore dropped it)."""
    stub = os.path.join(GOLDEN, SAMPLE, "mylib", "_speedups.so")
    if not os.path.exists(stub):
        open(stub, "wb").close()


@pytest.fixture
def in_golden(monkeypatch):
    _extension_stub()
    monkeypatch.chdir(GOLDEN)


# -- check -------------------------------------------------------------------------------------


def test_check_sample_library_text_golden(in_golden, capsys):
    code, out, err = run(["check", SAMPLE], capsys)
    assert code == 1 and err == ""
    golden("samplelib.txt", out)
    assert out.rstrip().splitlines()[-1].endswith(" in 4 files")


def test_check_sample_library_json_golden(in_golden, capsys):
    code, out, _ = run(["check", "--format", "json", SAMPLE], capsys)
    assert code == 1
    golden("samplelib.json", out)
    data = json.loads(out)
    assert data["summary"]["files"] == 4 and data["summary"]["errors"] > 0
    first = data["diagnostics"][0]
    assert set(first) == {"path", "line", "col", "code", "message", "severity", "hint", "length"}


def test_check_flag_spelling_and_target_python(in_golden, capsys):
    path = os.path.join(SAMPLE, "mylib", "stats.py")
    _, default, _ = run(["--check", path], capsys)
    _, newer, _ = run(["check", "--target-python", "3.11", path], capsys)
    assert "NN102" in default and "match statement requires Python 3.10" in default
    assert "NN102" not in newer
    assert run(["--format", "json", "--check", path], capsys)[0] == 1


def test_exit_codes(tmp_path, capsys):
    clean = tmp_path / "clean.py"
    clean.write_text("import math\n\ndef f(x):\n    return math.sqrt(x)\n")
    warn = tmp_path / "warn.py"
    warn.write_text("breakpoint()\n")
    code, out, _ = run(["check", str(clean)], capsys)
    assert (code, out) == (0, "0 errors, 0 warnings in 1 file\n")
    code, out, _ = run(["check", str(warn)], capsys)
    assert code == 0 and out.endswith("0 errors, 1 warning in 1 file\n")
    assert run(["check", str(tmp_path / "missing.py")], capsys)[0] == 2
    assert run(["check"], capsys)[0] == 2
    assert run([], capsys)[0] == 2
    assert run(["check", "--target-python", "2.7", str(clean)], capsys)[0] == 2
    assert run(["check", "--format", "xml", str(clean)], capsys)[0] == 2
    assert run(["--help"], capsys)[0] == 0


def test_check_module_names(capsys):
    code, out, _ = run(["check", "json"], capsys)
    assert code == 0 and "note NN200" in out and out.endswith("0 errors, 0 warnings in 0 files\n")
    code, out, _ = run(["check", "subprocess"], capsys)
    assert code == 1 and "error NN201: module 'subprocess' is not available on the server" in out
    code, out, _ = run(["check", "--format", "json", "msgpack.exceptions"], capsys)  # always installed
    data = json.loads(out)
    assert code == 1 and [d["code"] for d in data["diagnostics"]] == ["NN202"]
    assert data["summary"] == {"errors": 1, "warnings": 0, "files": 1}


# -- emit --------------------------------------------------------------------------------------

SCRIPT = """\
from nnsight import LanguageModel

model = LanguageModel("gpt2")
scale = 0.5

with model.trace("The Eiffel Tower is in") as tracer:
    h = model.transformer.h[0].output.save()
    out = model.lm_head.output * scale

def generate(prompt):
    with model.generate(prompt, max_new_tokens=3) as gen:
        with gen.invoke(prompt):
            toks = model.generator.output.save()
    return toks

with open(__file__) as f:
    pass
"""


def split_programs(out):
    chunks, current = [], None
    for line in out.splitlines(keepends=True):
        if line.startswith("# "):
            current = []
            chunks.append((line[2:].strip(), current))
        elif current is not None:
            current.append(line)
    return [(where, "".join(lines).rstrip("\n") + "\n") for where, lines in chunks]


def test_emit_prints_each_tracing_block(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo.py").write_text(SCRIPT)
    code, out, err = run(["emit", "demo.py"], capsys)
    assert code == 0 and err == ""
    programs = [(where, parse_program(text)) for where, text in split_programs(out)]
    assert [where for where, _ in programs] == ["demo.py:6", "demo.py:11"]
    first, second = programs[0][1], programs[1][1]
    assert [b.name for b in first.bindings] == ["model", "scale"]
    assert {b.kind for p in (first, second) for b in p.bindings} == {"runtime"}
    assert first.units[0].assigned == ("h", "out") and len(second.units) == 2
    for _, p in programs:
        verify(p)


def test_emit_binary_and_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo.py").write_text(SCRIPT)
    code, out, err = run(["emit", "demo.py", "--binary", "out.nnir"], capsys)
    assert code == 0 and "out-1.nnir" in err and "out-2.nnir" in err
    texts = [t for _, t in split_programs(out)]
    for i, text in enumerate(texts):
        with open("out-%d.nnir" % (i + 1), "rb") as f:
            assert decode(f.read()) == parse_program(text)
    code, out, _ = run(["emit", "demo.py", "--line", "11", "--binary", "one.nnir"], capsys)
    assert code == 0 and [w for w, _ in split_programs(out)] == ["demo.py:11"]
    with open("one.nnir", "rb") as f:
        assert decode(f.read()).units[0].loc.line == 12


def test_emit_errors(tmp_path, capsys):
    none = tmp_path / "none.py"
    none.write_text("with open('x') as f:\n    pass\n")
    bad = tmp_path / "bad.py"
    bad.write_text("with model.trace(:\n    pass\n")
    code, _, err = run(["emit", str(none)], capsys)
    assert code == 1 and "no tracing with-block" in err
    code, _, err = run(["emit", str(bad)], capsys)
    assert code == 1 and "error NN101" in err
    assert run(["emit", str(tmp_path / "missing.py")], capsys)[0] == 2


def test_ir_doc_example_round_trips():
    with open(os.path.join(ROOT, "docs", "ir.md"), encoding="utf-8") as f:
        doc = f.read()
    text = re.search(r"```text\n(nnsight-ir \d+\n.*?)```", doc, re.S).group(1)
    program = parse_program(text)
    verify(program)
    assert print_program(program) == text


# -- python -m compiler, on this and other interpreters ------------------------------------------


_HAS_DEPS = ("import importlib.util as u, sys; "
             "sys.exit(not all(u.find_spec(m) for m in ('libcst', 'msgpack', 'zstandard')))")
OTHER_PYTHONS = ("3.9", "3.13")


def _interpreter(version):
    """A CPython ``version`` (``"3.9"``) with the compiler's dependencies, or None.

    Looks at the project's client envs (``scripts/pyenvs.sh``), then ``python3.X`` on PATH, then pyenv.
    """
    envs = os.environ.get("NNSIGHT_PYENVS", os.path.expanduser("~/.cache/nnsight-dev"))
    candidates = [os.path.join(envs, "py" + version.replace(".", ""), "bin", "python"),
                  shutil.which("python" + version)]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/%s.*/bin/python" % version)))
    for exe in candidates:
        if exe and os.path.isfile(exe) and subprocess.run([exe, "-c", _HAS_DEPS], capture_output=True).returncode == 0:
            return exe
    return None


def _module_cmd(python, *args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.Popen([python, "-m", "compiler"] + list(args), cwd=GOLDEN, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc):
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def other_pythons(tmp_path_factory):
    """``version -> (check result, emit result)``, all run concurrently (each ``(code, out, err)``)."""
    _extension_stub()
    script = tmp_path_factory.mktemp("xv") / "demo.py"
    script.write_text(SCRIPT)
    started = {"current": (_module_cmd(sys.executable, "check", "--format", "json", SAMPLE),
                           _module_cmd(sys.executable, "emit", str(script)))}
    for version in OTHER_PYTHONS:
        python = _interpreter(version)
        if python is not None:
            started[version] = (_module_cmd(python, "check", "--format", "json", SAMPLE),
                                _module_cmd(python, "emit", str(script)))
    return {v: (_finish(check), _finish(emit)) for v, (check, emit) in started.items()}


def test_python_dash_m_compiler(other_pythons):
    (code, out, err), (emit_code, _, emit_err) = other_pythons["current"]
    assert code == 1, err
    with open(os.path.join(GOLDEN, "samplelib.json"), encoding="utf-8") as f:
        assert out == f.read()
    assert emit_code == 0, emit_err


@pytest.mark.crossversion
@pytest.mark.parametrize("version", OTHER_PYTHONS)
def test_cli_on_other_pythons(version, other_pythons):
    if version not in other_pythons:
        pytest.skip("CPython %s with libcst, msgpack and zstandard is not installed" % version)
    (code, out, err), (emit_code, emit_out, emit_err) = other_pythons[version]
    assert code == 1, err
    with open(os.path.join(GOLDEN, "samplelib.json"), encoding="utf-8") as f:
        assert json.loads(out) == json.loads(f.read())
    assert emit_code == 0, emit_err
    programs = split_programs(emit_out)
    assert [where.rsplit(":", 1)[1] for where, _ in programs] == ["6", "11"]
    assert all("binding model runtime" in text for _, text in programs)
