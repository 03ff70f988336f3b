"""nnsight.RemoteModel from clients without torch: this Python with torch hidden, and the 3.9, 3.10,
3.12 and 3.13 client environments of scripts/pyenvs.sh, against the 3.11 server on loopback. The
body calls user code sent by value: a function of the script and a helper module from a temporary
directory registered with ``nnsight.register``."""
import json
import os
import subprocess
import sys

import pytest
import torch

from serverproc import ROOT

CLIENT_SCRIPT = r'''
import json, sys
for name in sys.argv[1].split(","):
    if name:
        sys.modules[name] = None  # not installed, as far as this client can tell
sys.path.insert(0, sys.argv[4])
import nnsight
from nnsight import RemoteModel
import remote_helpers  # the user's library: not installed on the server

nnsight.register(remote_helpers)

def scaled(x, factor=2):  # user code: travels by value
    return x * factor

model = RemoteModel("gpt2", host=sys.argv[2], api_key=sys.argv[3])
with model.trace("The Eiffel Tower is in the city of"):
    lib = remote_helpers.centred(model.transformer.h[0].output[0][-1]).save()
    last = scaled(model.lm_head.output[0][-1]).save()
    shape = model.lm_head.output.shape.save()
    print("running on the server")
with model.generate("Hello", max_new_tokens=2) as tracer:
    out = tracer.result.save()
tolist = lambda v: v.tolist() if hasattr(v, "tolist") else v
print(json.dumps({"last": tolist(last), "lib": tolist(lib), "shape": list(shape), "out": tolist(out),
                  "types": [type(last).__module__, type(out).__module__],
                  "torch": sys.modules.get("torch") is not None, "python": sys.version_info[:2]}))
'''

HELPERS = '''
"""A user's helper library, sent to the server by value."""
OFFSET = 0.25


def centred(x):
    return x - x.mean() + OFFSET
'''


@pytest.fixture(scope="module")
def helpers_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("user-lib")
    (path / "remote_helpers.py").write_text(HELPERS)
    return str(path)


@pytest.fixture(scope="module")
def expected(gpt2):
    with gpt2.trace("The Eiffel Tower is in the city of"):
        hidden = gpt2.transformer.h[0].output[0][-1]
        lib = (hidden - hidden.mean() + 0.25).save()
        last = (gpt2.lm_head.output[0][-1] * 2).save()
    with gpt2.generate("Hello", max_new_tokens=2) as tracer:
        out = tracer.result.save()
    return {"last": last.tolist(), "lib": lib.tolist(), "shape": [1, 9, 768], "out": out.tolist()}


def run_client(python, server, api_key, hide, helpers_dir):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([python, "-c", CLIENT_SCRIPT, hide, server.host, api_key, helpers_dir],
                          capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "running on the server" in proc.stdout  # print() in the body arrived as a LOG line
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("hide, kind", [("torch", "numpy"), ("torch,numpy", "builtins")])
def test_without_torch_values_equal_a_local_run(server, api_key, expected, helpers_dir, hide, kind):
    got = run_client(sys.executable, server, api_key, hide, helpers_dir)
    assert got["torch"] is False and got["types"] == [kind, kind]
    assert got["last"] == expected["last"] and got["out"] == expected["out"]
    assert got["lib"] == expected["lib"]
    assert got["shape"][-1] == 768


VERSIONS = ["3.9", "3.10", "3.12", "3.13"]


@pytest.fixture(scope="module")
def client_pythons():
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "pyenvs.sh")] + VERSIONS,
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError("scripts/pyenvs.sh failed:\n" + proc.stderr)
    return dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line.strip())


@pytest.mark.crossversion
@pytest.mark.parametrize("version", VERSIONS)
def test_other_python_clients_get_the_same_values(server, api_key, expected, helpers_dir, client_pythons,
                                                  version):
    if version not in client_pythons:
        pytest.skip("CPython %s is not installed (scripts/pyenvs.sh)" % version)
    got = run_client(client_pythons[version], server, api_key, "", helpers_dir)
    assert got["python"] == [int(p) for p in version.split(".")] and got["torch"] is False
    assert got["last"] == expected["last"] and got["out"] == expected["out"]
    assert got["lib"] == expected["lib"]  # the registered helper module ran on the server
