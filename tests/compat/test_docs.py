"""What the docs show is what happens: the debugging example's traceback, the API they name."""
import os
import re
import subprocess
import sys

import nnsight

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_doc(name):
    with open(os.path.join(ROOT, "docs", name), encoding="utf-8") as f:
        return f.read()


def test_debugging_first_example_traceback_lines_are_the_real_ones(tmp_path):
    doc = read_doc("debugging.md")
    blocks = re.findall(r"```(python|text)\n(.*?)```", doc, re.S)
    script = next(body for kind, body in blocks if kind == "python" and body.startswith("# experiment.py"))
    shown = next(body for kind, body in blocks if kind == "text" and "experiment.py" in body)
    path = tmp_path / "experiment.py"
    path.write_text(script)
    run = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": ROOT})
    assert run.returncode == 1
    frames = re.findall(r'File ".*?experiment\.py", line (\d+), in (\S+)\n\s+(.*)\n', run.stderr)
    documented = re.findall(r'File "experiment\.py", line (\d+), in (\S+)\n\s+(.*)\n', shown)
    assert frames == documented, run.stderr
    assert shown.strip().splitlines()[-1] == run.stderr.strip().splitlines()[-1]


def test_remotable_python_names_only_existing_nnsight_api():
    doc = read_doc("remotable-python.md")
    named = set(re.findall(r"\bnnsight\.([A-Za-z_]\w*)", doc))
    assert "save" in named
    missing = sorted(name for name in named if not hasattr(nnsight, name))
    assert not missing, f"docs/remotable-python.md names nnsight.{missing}, which does not exist"
