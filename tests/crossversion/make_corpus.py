"""Write the golden IR corpus of the current ir_version: tests/golden/ir/corpus/v<N>/.

    ~/.cache/nnsight-dev/venv311/bin/python tests/crossversion/make_corpus.py [--force]

Each program is compiled by the client Python named in CORPUS (through the same drivers as
the cross-version tests) and stored as NAME.py (the script), NAME.nnir (binary IR), NAME.txt
(text IR) and NAME.json (what running it on the MLP of ``xvsupport.make_model`` saves).
The files of a released ir_version are frozen: this script refuses to overwrite an existing
file unless --force (only for a version that has not shipped). test_golden_corpus.py checks
that every corpus file of every version keeps loading (through the upgraders) and running.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import xvsupport as xv  # noqa: E402

CORPUS_DIR = os.path.join(xv.ROOT, "tests", "golden", "ir", "corpus")

# name -> (client Python, script)
CORPUS = {
    "reads_writes": ("3.9", xv.script(
        "first = model[0].output.save()\nmodel[1].output[:, 2] = 0\n"
        "model[2].output[:] = model[2].output * -0.5\nmodel[4].output = model[4].output + 1\n"
        "mid = (model[4].output * 2 - 1).save()\nout = model.output.save()\n",
        saved=["first", "mid", "out"])),
    "control_flow": ("3.10", xv.script(
        "h = model[0].output\nif h.sum() > 0:\n    v = (h * 2).save()\nelse:\n    v = (h - 2).save()\n"
        "acc = torch.zeros(3)\nfor j in range(4):\n    if j == 2:\n        continue\n    acc = acc + h[:, j]\n"
        "n = 0\nwhile n < 3:\n    n += 1\ntry:\n    q = [1.0][n]\nexcept IndexError:\n    q = float(n)\n"
        "if (s := acc.sum()) > -100:\n    total = (acc * q + s).save()\n",
        saved=["v", "total"])),
    "comprehensions_fstrings": ("3.12", xv.script(
        "h = model[2].output\nrows = [h[i].sum() for i in range(3) if i != 1]\n"
        'cols = {f"c{j}": h[:, j] for j in range(4)}\nlabel = f"{len(cols)}:{h.shape[-1]:03d}:{0.5!r}".save()\n'
        "v = (torch.stack(rows).sum() + sum(t.sum() for t in cols.values()) * len(label)).save()\n",
        saved=["label", "v"])),
    "helpers_inline": ("3.13", xv.script(
        "def make_scaler(c):\n    def scale(t):\n        return t * c\n    return scale\n\n\n"
        "class Acc:\n    def __init__(self):\n        self.parts = []\n\n    def add(self, t):\n"
        "        self.parts.append(t)\n        return self\n\n\n"
        "def tri(n):\n    return 0 if n == 0 else n + tri(n - 1)\n\n\n"
        "half = make_scaler(0.5)\nacc = Acc().add(half(model[0].output)).add(model[2].output)\n"
        "v = (torch.stack(acc.parts).sum(0) * tri(3)).save()\nw = (lambda t: t.clamp(min=0))(model[6].output).save()\n",
        saved=["v", "w"])),
    "match_except_star": ("3.11", xv.script(
        "h = model[1].output\nmatch h.shape:\n    case (3, n):\n        v = (h * n).save()\n"
        "    case _:\n        v = h.save()\ntry:\n    raise ExceptionGroup('g', [KeyError(1)])\n"
        "except* KeyError:\n    w = (h + 1).save()\n",
        saved=["v", "w"])),
    "parenthesized_with": ("3.13", xv.script(
        "class Scale:\n    def __init__(self, c):\n        self.c = c\n\n    def __enter__(self):\n"
        "        return self.c\n\n    def __exit__(self, *exc):\n        return False\n\n"
        "with (\n    Scale(2.0) as a,  # scale\n    Scale(0.5) as b,\n):\n"
        "    v = (model[0].output * a + b).save()\n", saved=["v"])),
    "invokes": ("3.9", xv.script(
        "with tracer.invoke(x):\n    a = model[2].output.save()\n"
        "with tracer.invoke(x * 2):\n    model[2].output[:] = 0\n    b = model.output.save()\n",
        saved=["a", "b"], header="with model.trace() as tracer:")),
    "gradient_session": ("3.10", xv.script(
        "h = model[0].output\nh.requires_grad = True\nout = model.output\n"
        "with out.pow(2).sum().backward():\n    g = h.grad.save()\ntotal = out.sum().detach().save()\n",
        saved=["g", "total"])),
    "closure_definitions": ("3.12", xv.script(
        "v = helper(model[2].output).save()\nw = scaler(model[4].output).save()\nout = model.output.save()\n",
        helpers="def helper(t):\n    return torch.tanh(t) * SCALE\n\n\n"
                "def make_scaler(c):\n    def scale(t):\n        return t * c + SCALE\n    return scale\n\n\n"
                "SCALE = 0.5\nscaler = make_scaler(3.0)",
        saved=["v", "w", "out"], closure=True)),
}


def tensor_json(value):
    import torch

    if isinstance(value, torch.Tensor):
        t = value.detach().to("cpu")
        return {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape),
                "values": [float(v) for v in t.double().flatten().tolist()]}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return {"python": value}
    raise TypeError("cannot store a %s in the corpus" % type(value).__name__)


def main(argv):
    from compiler.ir import IR_VERSION, decode, print_program

    force = "--force" in argv
    out_dir = os.path.join(CORPUS_DIR, "v%d" % IR_VERSION)
    os.makedirs(out_dir, exist_ok=True)
    pythons, messages = xv.client_pythons()
    clients = xv.Clients({v: pythons[v] for v in sorted({v for v, _ in CORPUS.values()})})
    try:
        model, x, _ = xv.make_model()
        for name, (version, script) in CORPUS.items():
            script.filename = name + ".py"
            data = clients.compile([script], versions=[version])[version][0]
            program = decode(data)
            mode = "local_server" if script.closure else "run_ir"
            saved = (xv.run_local_server if script.closure else xv.run_ir)(data, model, x)
            live = xv.run_live(script, model, x)
            assert xv.same(saved, live) is None, (name, xv.same(saved, live))
            expected = {"client": program.header.python, "mode": mode,
                        "saved": {k: tensor_json(v) for k, v in sorted(saved.items())}}
            files = {
                name + ".py": script.source.encode("utf-8"),
                name + ".nnir": data,
                name + ".txt": print_program(program).encode("utf-8"),
                name + ".json": (json.dumps(expected, indent=1, sort_keys=True) + "\n").encode("utf-8"),
            }
            for fname, content in files.items():
                path = os.path.join(out_dir, fname)
                if os.path.exists(path) and not force:
                    with open(path, "rb") as f:
                        if f.read() != content:
                            print("kept %s (exists and differs; --force to overwrite)" % path)
                    continue
                with open(path, "wb") as f:
                    f.write(content)
                print("wrote", path)
    finally:
        clients.close()


if __name__ == "__main__":
    main(sys.argv[1:])
