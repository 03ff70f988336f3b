"""``with tracer.local():`` and ``model.scan`` from the torch-free ``nnsight.RemoteModel``.

The client runs in a subprocess: this Python with torch (and numpy) hidden, and the 3.9 and 3.13
client environments of scripts/pyenvs.sh (no torch, no numpy), against the 3.11 server on
loopback. A local block sees the tensors it reads as numpy arrays (numpy installed) or nested
lists of Python floats (no numpy); what it assigns, what it edits in place and what it saves
(``nnsight.save``) go back to the server. A saved ``model.output`` (a transformers ``ModelOutput``,
whose class this client has not loaded) comes back as a ``MappingRecord`` with attribute access.
Values must equal a local run's, bit for bit.
"""
import json
import os
import subprocess
import sys

import pytest

from serverproc import ROOT
from test_torch_free_client import VERSIONS, client_pythons  # noqa: F401  (the client envs fixture)

PROMPT = "The Eiffel Tower is in the city of"

CLIENT_SCRIPT = r'''
import json, sys
for name in sys.argv[1].split(","):
    if name:
        sys.modules[name] = None  # not installed, as far as this client can tell
import nnsight
from nnsight import RemoteModel

PROMPT = "The Eiffel Tower is in the city of"


def scaled(x):  # client-only code: runs in the local block, never sent
    if isinstance(x, list):
        return [scaled(v) for v in x]
    return x * 1.5


def last_row_sum(x):
    row = x[0][-1]
    return float(sum(float(v) for v in row))


def zero_last_row(x):
    row = x[0][-1]
    for i in range(len(row)):
        row[i] = 0.0


model = RemoteModel("gpt2", host=sys.argv[2], api_key=sys.argv[3])
with model.trace(PROMPT) as tracer:
    hidden = model.transformer.h[1].output
    with tracer.local():
        print("local block sees", type(hidden).__module__, len(hidden[0]), len(hidden[0][0]))
        steered = scaled(hidden)
        total = nnsight.save(last_row_sum(hidden))
    model.transformer.h[1].output[:] = hidden.new_tensor(steered)
    logits = model.lm_head.output[0][-1].save()

with model.trace(PROMPT) as tracer:
    hidden = model.transformer.h[0].output
    with tracer.local():
        zero_last_row(hidden)  # in place: the server copies it into its activation
    last = model.transformer.h[0].output[0, -1].save()
    edited = model.lm_head.output[0][-1].save()

with model.scan(PROMPT):
    shape = model.transformer.h[0].output.shape.save()
    meta = model.transformer.h[1].output.save()

with model.trace(PROMPT):
    output = model.output.save()  # a ModelOutput: no transformers here, so a MappingRecord

tolist = lambda v: v.tolist() if hasattr(v, "tolist") else v
print(json.dumps({"logits": tolist(logits), "total": total, "last": tolist(last), "edited": tolist(edited),
                  "shape": list(shape), "meta": [list(meta.shape), meta.dtype, meta.device],
                  "output": [type(output).__name__, output.record_class, list(output), output.loss,
                             tolist(output.logits)[0][-1], tolist(output["logits"])[0][-1],
                             type(output.past_key_values).__name__, output.past_key_values.record_class,
                             tolist(output.past_key_values.layers[1].keys)],
                  "torch": sys.modules.get("torch") is not None, "python": sys.version_info[:2]}))
'''


@pytest.fixture(scope="module")
def expected(gpt2):
    with gpt2.trace(PROMPT):
        row = gpt2.transformer.h[1].output[0, -1].clone().save()
        gpt2.transformer.h[1].output[:] = gpt2.transformer.h[1].output * 1.5
        logits = gpt2.lm_head.output[0][-1].save()
    with gpt2.trace(PROMPT):
        gpt2.transformer.h[0].output[0, -1] = 0
        last = gpt2.transformer.h[0].output[0, -1].save()
        edited = gpt2.lm_head.output[0][-1].save()
    with gpt2.scan(PROMPT):
        shape = gpt2.transformer.h[0].output.shape.save()
        meta = gpt2.transformer.h[1].output.save()
    with gpt2.trace(PROMPT):
        output = gpt2.output.save()
    cache = "transformers.cache_utils:DynamicCache"
    record = ["MappingRecord", "transformers.modeling_outputs:CausalLMOutputWithCrossAttentions",
              ["logits", "past_key_values"], None, output.logits[0, -1].tolist(), output.logits[0, -1].tolist(),
              "MappingRecord", cache, output.past_key_values.layers[1].keys.tolist()]
    return {"output": record, "logits": logits.tolist(), "total": sum(float(v) for v in row.tolist()),
            "last": last.tolist(), "edited": edited.tolist(),
            "shape": list(shape), "meta": [list(meta.shape), str(meta.dtype).replace("torch.", ""), "meta"]}


def run_client(python, server, api_key, hide):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([python, "-c", CLIENT_SCRIPT, hide, server.host, api_key], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(proc.stdout.strip().splitlines()[-1])


def _check(out, got, expected, kind):
    assert got["torch"] is False
    assert "local block sees %s 8 64" % kind in out  # the block ran here, on the values sent
    for key in ("logits", "total", "last", "edited", "shape", "meta", "output"):
        assert got[key] == expected[key], key
    assert not any(got["last"])


@pytest.mark.parametrize("hide, kind", [("torch", "numpy"), ("torch,numpy", "builtins")])
def test_local_block_and_scan_without_torch(server, api_key, expected, hide, kind):
    out, got = run_client(sys.executable, server, api_key, hide)
    _check(out, got, expected, kind)


@pytest.mark.crossversion
@pytest.mark.parametrize("version", ["3.9", "3.13"])
def test_local_block_and_scan_from_other_pythons(server, api_key, expected, client_pythons, version):  # noqa: F811
    if version not in client_pythons:
        pytest.skip("CPython %s is not installed (scripts/pyenvs.sh)" % version)
    out, got = run_client(client_pythons[version], server, api_key, "")
    assert got["python"] == [int(p) for p in version.split(".")]
    _check(out, got, expected, "builtins")
