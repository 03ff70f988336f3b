"""The client-side checker reports what the server's loader refuses, with the same code, at the same line.

One table (compiler/access.py) serves both; these cases send the same source to the server (as a
hand-written request) and to ``nnsight-compile check``.
"""
import json
import os

import pytest

from compiler.analysis import check_source
from compiler.cli import main
from runtime.loader import ServerImportError, ServerRefusal

from loader_attacks import ir_text, payload, serve

check_source("f = len\ng = f.__globals__\n")  # load the checker's parser before no_trace's snapshot

# (source, the code both sides report)
SAME = [
    ("f = len\ng = f.__globals__\n", "NN402"),
    ('b = __builtins__["open"]\n', "NN402"),
    ('f = len\nc = getattr(f, "__code__")\n', "NN403"),
    ("import torch\ntorch.save(torch.ones(1), 'x.pt')\n", "NN401"),
    ("import numpy\nnumpy.memmap('x.bin')\n", "NN401"),
    ("from torch import load\n", "NN401"),
    ("import torch\nc = torch._C\n", "NN402"),
    ("import math\nmath.pi = 3\n", "NN404"),
    ("import torch\ntorch.Tensor = None\n", "NN404"),
    ('X = type("X", (), {})\n', "NN403"),
    ("g = (i for i in ())\nfr = g.gi_frame\n", "NN402"),
    ("import compiler.policy\n", "NN201"),
    ("f = len\nmatch f:\n    case object(__globals__=g):\n        pass\n", "NN402"),
    ("match 1:\n    case object(real=object(imag=x)):\n        pass\n", "NN402"),
    ("class Raw:\n    __array_interface__ = {}\n", "NN402"),
]


def _server_code(gpt2, source):
    text = ir_text(source + "out = model.transformer.h[0].output[0].save()\n")
    with pytest.raises((ServerRefusal, ServerImportError)) as info:
        serve(gpt2, payload(gpt2, text))
    return info.value, str(info.value)


@pytest.mark.parametrize("source,code", SAME, ids=[s.strip().replace("\n", "; ") for s, _ in SAME])
def test_checker_and_server_agree(gpt2, no_trace, source, code):
    found = [d for d in check_source(source, "attack.py", target=(3, 11)) if d.severity == "error"]
    assert found and found[0].code == code, [(d.code, d.message) for d in found]
    error, message = _server_code(gpt2, source)
    server_code = getattr(error, "code", None)
    if code == "NN201":  # an import: the server's refusal of a module is a ServerImportError too
        assert isinstance(error, ServerImportError) and "compiler.policy" in message
        return
    assert server_code == code, message
    # the unit starts at line 2 of attack.py; the checker numbers the source from line 1
    assert "attack.py:%d" % (found[0].line + 1) in message or code == "NN401", message


def test_nnsight_compile_check_reports_the_server_codes(tmp_path, capsys):
    path = tmp_path / "attack.py"
    path.write_text("import torch\nimport numpy as np\n"
                    "with model.trace('x'):\n"
                    "    torch.save(1, 'x')\n"
                    "    a = np.zeros(2)\n"
                    "    f = len\n"
                    "    g = f.__globals__\n"
                    "    torch.foo = 1\n"
                    "    h = torch._C\n")
    code = main(["check", "--format", "json", str(path)])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    found = [(d["code"], d["line"]) for d in out["diagnostics"]]
    assert found == [("NN401", 4), ("NN402", 7), ("NN404", 8), ("NN402", 9)], found
    assert all(os.path.basename(d["path"]) == "attack.py" for d in out["diagnostics"])


def test_docs_list_every_refused_entry():
    """docs/security.md carries the whole per-module table (one table: compiler/data/server_access.json)."""
    from compiler import access

    doc = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "security.md"), encoding="utf-8").read()
    for top, entries in access.REFUSED_ENTRIES.items():
        for path in entries:
            assert "| `%s` | `%s` |" % (top, path) in doc, (top, path)
    for top, entries in access.SHARED_ENTRIES.items():
        for path in entries:
            assert "| `%s` | `%s` on the server's objects" % (top, path) in doc, (top, path)
    for top, entries in access.READ_ONLY_CLASSES.items():
        for path in entries:
            assert "| `%s` | assigning or deleting an attribute of a `%s`" % (top, path) in doc, (top, path)
    for name in access.SAFE_DUNDERS:
        assert "`%s`" % name in doc, name
    for section in ("## Threat model", "## The loader"):
        assert section in doc


def test_remote_local_reports_a_refused_entry_before_sending(gpt2, no_trace):
    """The closure pass of remote='local' reports torch.save (NN401) at the user's line, client side."""
    import inspect

    import torch

    from compiler.diagnostics import DiagnosticError

    marker = no_trace.marker
    line = inspect.currentframe().f_lineno + 3
    with pytest.raises(DiagnosticError) as info:
        with gpt2.trace("The Eiffel Tower is in", remote="local"):
            torch.save(gpt2.transformer.h[0].output[0], marker)
    diagnostic = info.value.diagnostics[0] if hasattr(info.value, "diagnostics") else info.value.diagnostic
    assert diagnostic.code == "NN401" and diagnostic.line == line, diagnostic
    assert "'torch.save'" in diagnostic.message
