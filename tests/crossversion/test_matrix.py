"""The portability matrix: programs compiled on CPython 3.9-3.13 clients, run by the 3.11 runtime.

For every generated script (hypothesis, :func:`xvsupport.programs`):

* each client Python (one persistent driver per version) lowers it to an IR binary;
* the binaries are byte-identical across versions except ``header.python``, which records the
  client's version by design (compared after blanking it: :func:`xvsupport.normalized`);
* every binary, run by this runtime on the MLP, saves exactly what the same script saves when it
  runs directly here (a live ``with model.trace(x):``), tensors compared bit for bit.

Helpers are defined inside the trace body (``inline``) or at module level and carried by value
by the dependency closure (``closure``; run through the ``remote='local'`` server, so the
3.11 side never sees the client's code except through the IR).

NNSIGHT_XV_EXAMPLES (default 30) sets the examples per property; NNSIGHT_XV_RANDOM=1 draws new
ones instead of the fixed, reproducible sequence.
"""
import os

import pytest
from hypothesis import HealthCheck, given, settings

import xvsupport as xv
from compiler.ir import decode

pytestmark = pytest.mark.crossversion

EXAMPLES = int(os.environ.get("NNSIGHT_XV_EXAMPLES", "30"))
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
    derandomize=os.environ.get("NNSIGHT_XV_RANDOM") != "1",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
)


def check_identical(script, blobs, clients):
    """Same IR from every client: bytes equal once header.python is blanked; header.python is the client."""
    reference = xv.normalized(blobs["3.11"])
    for version, data in blobs.items():
        assert xv.normalized(data) == reference, (
            "IR from Python %s differs from 3.11's for:\n%s" % (version, script.source))
        header, _ = xv.split_binary(data)
        assert header["python"] == clients.clients[version].python
        assert header["python"].startswith(version + ".")


def check_runs(script, blobs, model, x, run):
    expected = xv.run_live(script, model, x)
    assert expected or not script.saved, "the live run saved nothing"
    for version, data in blobs.items():
        got = run(data, model, x)
        problem = xv.same(got, expected)
        assert problem is None, "IR compiled on Python %s: %s\n--- script ---\n%s" % (
            version, problem, script.source)


@SETTINGS
@given(script=xv.programs())
def test_inline_programs_compile_identically_and_run_the_same(script, clients, mlp):
    model, x, _ = mlp
    blobs = {v: b[0] for v, b in clients.compile([script]).items()}
    check_identical(script, blobs, clients)
    check_runs(script, blobs, model, x, xv.run_ir)


@SETTINGS
@given(script=xv.programs(closure=True, kinds=xv.CLIENT_SAFE_KINDS))
def test_closure_programs_compile_identically_and_run_the_same(script, clients, mlp):
    model, x, _ = mlp
    blobs = {v: b[0] for v, b in clients.compile([script]).items()}
    check_identical(script, blobs, clients)
    check_runs(script, blobs, model, x, xv.run_local_server)


# -- every kind of step, both modes, compiled as ONE batch per client Python ------------------------


def test_every_generator_kind_in_one_batch(clients, mlp):
    """The properties draw kinds at random; this makes sure each kind ran at least once."""
    model, x, _ = mlp
    scripts = [xv.seeded_program(seed, kinds=(kind,)) for seed, kind in enumerate(xv.READ_KINDS + xv.WRITE_KINDS)]
    scripts += [xv.seeded_program(seed, closure=True, kinds=(kind,)) for seed, kind in enumerate(xv.CLIENT_SAFE_KINDS)]
    compiled = clients.compile(scripts)
    for i, script in enumerate(scripts):
        blobs = {v: compiled[v][i] for v in compiled}
        check_identical(script, blobs, clients)
        check_runs(script, blobs, model, x, xv.run_local_server if script.closure else xv.run_ir)


# -- a fixed tour of every construct, compiled as ONE batch per client Python ----------------------

TOUR = [
    xv.script("h = model[1].output\nv = (h * 2 + h.abs() ** 2 - 1 / (h.abs() + 1)).save()\n", saved=["v"]),
    xv.script("model[0].output[:, 3] = 0\nmodel[2].output[:] = model[2].output * -0.5\n"
              "model[4].output = model[4].output + 1\nout = model.output.save()\n", saved=["out"]),
    xv.script("h = model[0].output\nif h.sum() > 0:\n    v = h.save()\nelif h.max() < 0:\n    v = (-h).save()\n"
              "else:\n    v = (h * 0).save()\nfor i in range(3):\n    if i == 1:\n        continue\n"
              "    h = h + i\nelse:\n    w = h.save()\nn = 0\nwhile True:\n    n += 1\n    if n > 2:\n"
              "        break\nk = torch.tensor(n).save()\n", saved=["v", "w", "k"]),
    xv.script("h = model[2].output\nrows = [h[i].sum() for i in range(h.shape[0]) if i != 1]\n"
              "cols = {j: h[:, j] for j in range(4)}\nuniq = {round(float(t), 3) for t in h[0]}\n"
              "gen = sum(t.sum() for t in cols.values())\nnested = [[a * b for b in range(2)] for a in range(3)]\n"
              "v = (torch.stack(rows).sum() + gen + len(uniq) + sum(map(sum, nested))).save()\n", saved=["v"]),
    xv.script('h = model[3].output\nname = "layer"\nlabel = f"{name!r:>10}|{h.shape[0]:03d}|{1/3:.4f}|{{}}"\n'
              'multi = f"""{name}\n{h.shape[-1]}"""\nmsg = (label + multi).save()\nv = (h * len(msg)).save()\n',
              saved=["msg", "v"]),
    xv.script("def make(c):\n    total = 0\n    def add(t):\n        nonlocal total\n        total = total + 1\n"
              "        return t * c + total\n    return add\n\nadd = make(2.0)\nh = model[0].output\n"
              "a = add(h)\nb = add(h)\nv = (a + b).save()\nsq = (lambda t, p=2: t ** p)(h).save()\n", saved=["v", "sq"]),
    xv.script("class Probe:\n    count = 0\n\n    def __init__(self, w):\n        self.w = w\n\n"
              "    def __call__(self, t):\n        Probe.count += 1\n        return t @ self.w\n\n"
              "    @staticmethod\n    def norm(t):\n        return t / (t.norm() + 1)\n\n"
              "probe = Probe(torch.ones(8, 2))\nv = Probe.norm(probe(model[4].output)).save()\n"
              "c = torch.tensor(Probe.count).save()\n", saved=["v", "c"]),
    xv.script("h = model[0].output\ntry:\n    raise ValueError(3)\nexcept (TypeError, ValueError) as e:\n"
              "    code = e.args[0]\nelse:\n    code = 0\nfinally:\n    code = code * 2\n"
              "assert code == 6, code\nv = (h * code).save()\nif (m := h.max()) > 0:\n    w = (h - m).save()\n"
              "else:\n    w = h.save()\n", saved=["v", "w"]),
    xv.script("h = model[1].output\nmatch h.shape:\n    case (3, width):\n        v = (h * width).save()\n"
              "    case _:\n        v = h.save()\n", saved=["v"]),
    xv.script("a, *rest = [model[0].output, 1, 2]\nv = (a * sum(rest)).save()\n"
              "d = {**{'x': 1}, 'y': 2}\nw = (a + d['y']).save()\n", saved=["v", "w"]),
    xv.script("v = helper(model[2].output).save()\nout = model.output.save()\n",
              helpers="def helper(t):\n    return torch.tanh(t) * SCALE\n\n\nSCALE = 0.5", saved=["v", "out"],
              closure=True),
]


def test_feature_tour_one_batch_per_client(clients, mlp):
    model, x, _ = mlp
    assert len(clients.versions) == len(xv.VERSIONS)
    compiled = clients.compile(TOUR)  # one request per client Python, all clients at once
    for i, script in enumerate(TOUR):
        blobs = {v: compiled[v][i] for v in compiled}
        check_identical(script, blobs, clients)
        check_runs(script, blobs, model, x, xv.run_local_server if script.closure else xv.run_ir)
    headers = [decode(compiled["3.9"][i]).header for i in range(len(TOUR))]
    assert headers[8].min_python == (3, 10) and headers[8].features[0][0] == "match statement"
    assert all(h.min_python == (3, 9) for i, h in enumerate(headers) if i != 8)
