"""Programs written the way nnsight 0.8.1's documentation writes them, run here and under 0.8.1.

Each program in ``peer_programs/`` checks itself against plain Hugging Face / torch (its own
``assert`` statements) and emits a JSON of numbers, shapes and strings. All programs run in one
process with this package; they must all pass. Where the public nnsight 0.8.1 is installed
(``/root/.cache/nnsight-peer/venv``), the same program texts run there too, concurrently, and
the outputs must agree, except for the deliberate differences listed in ``DIFFERENCES`` (each
one documented in docs/compat-0.8.md or docs/features.md).
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnsight.testing.tiny_encoders import build_bert, build_bert_classifier
from nnsight.testing.tiny_seq2seq import build_bart

HERE = Path(__file__).parent / "peer_programs"
ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = sorted(p.name for p in HERE.glob("p[0-9]*.py"))
PEER_PYTHON = Path("/root/.cache/nnsight-peer/venv/bin/python")
MARK = "PEER-PROGRAM-OUTPUT "

# program -> (the error 0.8.1 gives, where the difference is documented). Here the program runs.
DIFFERENCES = {
    "p04_iter_steps.py": (
        "NameError",
        "docs/features.md, unbounded loops: the code after `for step in tracer.iter[:]` runs "
        "(0.8.1 never runs it, so `result` is undefined there)"),
    "p58_nnsight_torch_module.py": (
        "NotImplementedError",
        "docs/compat-0.8.md: `NNsight(module)` batches tensor invokes along dim 0 (0.8.1 refuses "
        "several invokes on a plain module)"),
}

# program -> the module whose absence from the peer's environment lets the peer fail (not a
# difference of this package): the comparison is skipped when the peer's error names it.
PEER_ENVIRONMENT = {
    "p56_device_map.py": "accelerate",
}


def _launch(python, cwd, env):
    return subprocess.Popen([str(python), str(HERE / "_run_all.py"), *[str(HERE / p) for p in PROGRAMS]],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _collect(proc):
    """The runner's results, or the reason it gave none."""
    out, err = proc.communicate(timeout=600)
    lines = [l for l in out.splitlines() if l.startswith(MARK)]
    if not lines:
        return f"the runner printed no results (exit {proc.returncode}):\n{err[-3000:]}"
    return json.loads(lines[-1][len(MARK):])


@pytest.fixture(scope="module")
def results(gpt2_path, llama_path, tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(NNSIGHT_PEER_GPT2=str(gpt2_path), NNSIGHT_PEER_LLAMA=str(llama_path),
               NNSIGHT_PEER_BERT=build_bert(), NNSIGHT_PEER_BERT_CLS=build_bert_classifier(),
               NNSIGHT_PEER_BART=build_bart(), TOKENIZERS_PARALLELISM="false")
    ours = _launch(sys.executable, tmp_path_factory.mktemp("ours"), {**env, "PYTHONPATH": str(ROOT)})
    peer = _launch(PEER_PYTHON, tmp_path_factory.mktemp("peer"), env) if PEER_PYTHON.exists() else None
    return _collect(ours), (_collect(peer) if peer is not None else None)


def _agree(a, b, path="out"):
    """None when equal (floats to 1e-3), else where they differ."""
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-3):
            return None
        return f"{path}: {a!r} != {b!r}"
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{path}: keys {sorted(a)} != {sorted(b)}"
        return next((d for k in a if (d := _agree(a[k], b[k], f"{path}.{k}"))), None)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: length {len(a)} != {len(b)}"
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := _agree(x, y, f"{path}[{i}]"))), None)
    return None if a == b else f"{path}: {a!r} != {b!r}"


def test_there_are_enough_programs():
    assert len(PROGRAMS) >= 25


@pytest.mark.parametrize("program", PROGRAMS)
def test_program_runs_and_checks_itself(results, program):
    ours, _ = results
    assert isinstance(ours, dict), ours
    result = ours[program]
    assert "error" not in result, f"{program}: {result['error']}\n{result.get('traceback', '')}"


@pytest.mark.parametrize("program", PROGRAMS)
def test_program_agrees_with_nnsight_0_8_1(results, program):
    ours, peer = results
    if peer is None:
        pytest.skip("nnsight 0.8.1 (the peer) is not installed here")
    if isinstance(peer, str):
        pytest.skip(f"nnsight 0.8.1 (the peer) could not run the programs: {peer}")
    assert isinstance(ours, dict), ours
    mine, theirs = ours[program], peer[program]
    missing = PEER_ENVIRONMENT.get(program)
    peer_text = theirs.get("traceback", "") + theirs.get("error", "")
    if missing and (f"No module named '{missing}'" in peer_text or f"pip install {missing}" in peer_text):
        pytest.skip(f"the peer's environment has no {missing}")
    if program in DIFFERENCES:
        expected_error, why = DIFFERENCES[program]
        assert theirs.get("error", "").startswith(expected_error), (
            f"{program} is listed as a deliberate difference ({why}), but 0.8.1 now gives {theirs}")
        return
    assert "error" not in theirs, f"{program} fails under nnsight 0.8.1 (a bad program?): {theirs['error']}"
    assert "error" not in mine, mine["error"]
    difference = _agree(mine["out"], theirs["out"])
    assert difference is None, f"{program} differs from nnsight 0.8.1 at {difference}"
