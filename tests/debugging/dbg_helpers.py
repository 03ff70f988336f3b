"""Helpers for tests/debugging: subprocess runs shared across tests, golden tracebacks.

Every capture mode runs for real (a script, ``python -c``, an IPython shell, the
``python`` REPL in a pseudo-terminal), and the tests assert on the traceback
text it printed. The subprocesses are slow to start (torch), so the ones that
need no interaction start together, once per session, in the background.

Golden files live in ``tests/golden/tracebacks``; regenerate them with
``UPDATE_GOLDEN=1`` (tmp paths, the checkout, site-packages, memory addresses
and tensor ids are normalised).
"""
import difflib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SCRIPTS = HERE / "scripts"
GOLDEN = ROOT / "tests" / "golden" / "tracebacks"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
GOLDEN_PYTHON = (3, 11)  # caret lines differ between Python versions
INTERNAL = ("<ROOT>/nnsight/", "<ROOT>/runtime/", "<ROOT>/compiler/", "greenlet")


def child_env(tmp: Path, **extra) -> Dict[str, str]:
    """Environment of a child interpreter: offline, this checkout, no user config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNSIGHT_")}
    env.update(
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        NNSIGHT_CONFIG=str(tmp / "no-config.json"),
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONSTARTUP="",
        TERM="dumb",
    )
    env.pop("PYTHONSTARTUP")
    env.update(extra)
    return env


# ------------------------------------------------------------------ normalising, golden files

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]")


def normalise(text: str, tmp: Optional[Path] = None) -> str:
    text = _ANSI.sub("", text).replace("\r\n", "\n").replace("\r", "")
    if tmp is not None:
        text = text.replace(str(tmp.resolve()), "<TMP>").replace(str(tmp), "<TMP>")
    text = text.replace(str(ROOT), "<ROOT>")
    for key in ("purelib", "platlib", "stdlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            text = text.replace(path, "<%s>" % key.upper())
    text = re.sub(r"0x[0-9a-fA-F]{4,}", "0xADDR", text)
    text = re.sub(r"\b\d{6,}(?=\.grad)", "<ID>", text)
    return "\n".join(line.rstrip() for line in text.splitlines()).strip("\n") + "\n"


def check_golden(name: str, text: str) -> None:
    """Compare ``text`` with ``tests/golden/tracebacks/<name>.txt`` (UPDATE_GOLDEN=1 rewrites it)."""
    path = GOLDEN / (name + ".txt")
    if UPDATE:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    if sys.version_info[:2] != GOLDEN_PYTHON:
        pytest.skip("golden tracebacks are rendered by Python %d.%d" % GOLDEN_PYTHON)
    assert path.exists(), "missing golden file %s: run the tests with UPDATE_GOLDEN=1" % path
    expected = path.read_text()
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                            "golden/" + path.name, "rendered"))
        raise AssertionError("rendered traceback differs from %s (UPDATE_GOLDEN=1 to accept):\n%s"
                             % (path, diff))


# ------------------------------------------------------------------ reading tracebacks

_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<name>\S+)\n'
                    r'(?:(?P<src>    \s*\S.*)\n)?', re.M)


def frames(text: str) -> List[Tuple[str, int, str, str]]:
    """``(file, line, function, source line)`` of every frame of a rendered traceback."""
    out = []
    for m in _FRAME.finditer(text):
        src = (m.group("src") or "").strip()
        if src and set(src) <= set("^~ "):
            src = ""
        out.append((m.group("file"), int(m.group("line")), m.group("name"), src))
    return out


def exception_line(text: str) -> str:
    """The last ``Type: message`` line (first line of the message)."""
    lines = [l for l in text.splitlines() if l and not l.startswith(" ") and not l.startswith("Traceback")]
    candidates = [l for l in lines if re.match(r"^[\w.]+(: |$)", l)]
    return candidates[-1] if candidates else ""


def line_of(path: Path, text: str, after: Optional[str] = None) -> int:
    """1-based number of the first line of ``path`` whose stripped text is ``text``.

    With ``after``, the first one below the first line that is ``after``.
    """
    lines = [l.strip() for l in path.read_text().splitlines()]
    start = lines.index(after) + 1 if after is not None else 0
    for i in range(start, len(lines)):
        if lines[i] == text:
            return i + 1
    raise AssertionError("%r not in %s (after %r)" % (text, path, after))


def assert_clean(text: str, own_context: bool = False) -> None:
    """No nnsight frames, no internal exception chain (``own_context``: the user's own is expected)."""
    for marker in INTERNAL:
        assert marker not in text, "internal frame (%s) shown:\n%s" % (marker, text)
    assert own_context or "During handling of the above exception" not in text, text
    assert "SkipBody" not in text and "Cancelation" not in text, text


def sections(output: str) -> Dict[str, str]:
    """Split ``===== name`` sections of a script's output."""
    out: Dict[str, str] = {}
    name = None
    for line in output.splitlines(True):
        if line.startswith("===== "):
            name = line[6:].strip()
            out[name] = ""
        elif name is not None:
            out[name] += line
    return out


# ------------------------------------------------------------------ background runs

DASH_C = textwrap.dedent(
    """\
    import torch
    from nnsight import NNsight
    model = NNsight(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()))
    x = torch.randn(2, 4)
    with model.trace(x):
        hidden = model[0].output.save()
    print("shape", tuple(hidden.shape))
    with model.trace(x):
        picked = model[0].output[7]
    """
)

DEBUG_CONFIG = '{"APP": {"CROSS_INVOKER": false}, "API": {"HOST": "file-host:1", "APIKEY": "file-key"}}'


class Run:
    def __init__(self, proc: subprocess.Popen, tmp: Path):
        self.proc = proc
        self.tmp = tmp
        self._result = None

    def result(self) -> Tuple[int, str, str]:
        """(returncode, normalised stdout, normalised stderr)."""
        if self._result is None:
            out, err = self.proc.communicate(timeout=300)
            self._result = (self.proc.returncode, normalise(out, self.tmp), normalise(err or "", self.tmp))
        return self._result


class Runs:
    """The non-interactive subprocesses, started together."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        shutil.copytree(SCRIPTS, tmp, dirs_exist_ok=True)
        (tmp / "config.json").write_text(DEBUG_CONFIG)
        py = sys.executable
        self.runs = {
            "script": self._start([py, str(tmp / "errors.py")], merge=True),
            "dash_c": self._start([py, "-c", DASH_C]),
            "ipython": self._start([py, str(tmp / "ipython_cells.py")], merge=True),
            "debug_flag": self._start([py, "-d", str(tmp / "debug_flag.py")],
                                      NNSIGHT_CONFIG=str(tmp / "config.json"), NNSIGHT_HOST="env-host:2"),
        }

    def _start(self, args, merge: bool = False, **env) -> Run:
        proc = subprocess.Popen(args, cwd=str(self.tmp), env=child_env(self.tmp, **env), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merge else subprocess.PIPE)
        return Run(proc, self.tmp)

    def __getitem__(self, name: str) -> Tuple[int, str, str]:
        return self.runs[name].result()

    def close(self) -> None:
        for run in self.runs.values():
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.communicate()


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    r = Runs(tmp_path_factory.mktemp("debugging"))
    yield r
    r.close()


@pytest.fixture(scope="session")
def script_sections(runs) -> Dict[str, str]:
    """``errors.py``'s cases (stderr merged into stdout; every case flushes both)."""
    code, out, _ = runs["script"]
    assert code == 1, out  # the last case is uncaught
    return sections(out)
