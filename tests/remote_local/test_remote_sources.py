"""Finding and cutting user source (compiler.closure.sources), and scripts run as __main__."""
import os
import subprocess
import sys
import textwrap

import torch

from compiler.closure import sources

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def snippet_of(fn, decorators=False):
    ft = sources.file_text(fn.__code__.co_filename, fn.__globals__)
    node = sources.find_function(ft, fn.__code__)
    if fn.__name__ == "<lambda>":
        return sources.cut_expression(ft, node)
    return sources.cut_statement(ft, node, decorators=decorators)


def test_lambdas_on_one_line_by_column(mm):
    plus, times = mm.make_ops(3)
    assert snippet_of(plus).source == "lambda x: x + k\n"
    assert snippet_of(times).source == "lambda x: x * k\n"
    assert snippet_of(mm.OPS[1]).source == "lambda x: x / 2\n"
    assert snippet_of(plus).col < snippet_of(times).col


def test_lambdas_on_one_line_by_bytecode(mm, monkeypatch):
    """Before 3.11 code objects have no columns: candidates are compiled and compared."""
    monkeypatch.setattr(sources, "_bounding_box", lambda code: None)
    plus, times = mm.make_ops(3)
    assert snippet_of(times).source == "lambda x: x * k\n"
    assert snippet_of(plus).source == "lambda x: x + k\n"
    assert snippet_of(mm.OPS[0]).source == "lambda x: x - 1\n"


def test_nested_function_is_dedented_and_keeps_its_position(mm, libdir):
    s = snippet_of(mm.make_scaler(2))
    assert s.source == "def scale(x):\n    return x * k\n"
    assert s.filename == str(libdir / "mymethods.py") and s.col == 4
    text = (libdir / "mymethods.py").read_text().splitlines()
    assert text[s.line - 1].strip() == "def scale(x):"


def test_decorated_statement_and_class(mm):
    ft = sources.file_text(mm.__file__)
    node = sources.find_binding_statement(ft, "clamp_norm")
    assert sources.cut_statement(ft, node).source.startswith("@traced\ndef clamp_norm(")
    cls = sources.find_class(ft, mm.SteerConfig)
    assert sources.cut_statement(ft, cls).source.startswith("@dataclass\nclass SteerConfig:")
    assert sources.class_file(mm.SteerConfig) == mm.__file__  # not the dataclass's generated __init__


def test_multiline_strings_are_kept_verbatim(tmp_path):
    path = tmp_path / "doclib.py"
    path.write_text(textwrap.dedent('''\
        class Holder:
            def method(self):
                """First line.
            indented less than the code
                    and more."""
                return 1
        '''))
    sys.path.insert(0, str(tmp_path))
    try:
        import doclib

        s = snippet_of(doclib.Holder.method)
        assert s.source == ('def method(self):\n    """First line.\n    indented less than the code\n'
                            '            and more."""\n    return 1\n')
        assert doclib.Holder.method.__doc__ in s.source.replace('"""', "")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("doclib", None)


def test_generate_runs_remotely(gpt2, mm):
    def run(remote):
        with gpt2.generate("Hello", max_new_tokens=3, remote=remote):
            n = mm.normalize(gpt2.transformer.h[0].output[0]).save()
            out = gpt2.generator.output.save()
        return n, out

    (n1, o1), (n2, o2) = run(None), run("local")
    assert torch.allclose(n1, n2) and torch.equal(o1, o2)


SCRIPT = '''\
import torch
import nnsight
from nnsight import NNsight

torch.manual_seed(0)
model = NNsight(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()).eval())
stats = {"calls": 0}
LOG = []


def record(h):
    LOG.append(h.shape[0])
    stats["calls"] += 1
    return h * 2


with model.trace(torch.ones(2, 4), remote="local"):
    y = record(model[0].output)
    n = nnsight.save(len(LOG))
    calls = nnsight.save(stats["calls"])
    y = y.save()

with model.trace(torch.ones(2, 4)):
    expected = (model[0].output * 2).save()
assert n == 1 and calls == 1, (n, calls)          # the trace and record() share LOG and stats
assert LOG == [] and stats == {"calls": 0}          # ... on the server only
assert torch.allclose(y, expected)
import __main__
assert __main__.record is record                    # __main__ was hidden, then restored
print("ok")
'''


def test_script_run_as_main(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=ROOT, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")


def test_payload_benchmark_passes():
    """benchmarks/payload_size.py: the seeds' request is no larger than cloudpickle's payload."""
    env = dict(os.environ, PYTHONPATH=ROOT, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "payload_size.py")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "seeds' normalize example" in proc.stdout and "ratio" in proc.stdout
