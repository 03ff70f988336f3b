"""Shared pieces of the cross-version tests: the model, the program generator, the clients.

* :func:`make_model` -- a small MLP with weights from a formula (no RNG: the same on every
  torch build), wrapped in NNsight, and its input.
* :func:`programs` -- a hypothesis strategy of intervention scripts (``Script``).
* :class:`Clients` -- one persistent ``client_driver.py`` per client Python (from
  ``scripts/pyenvs.sh``); ``compile(scripts)`` sends a whole batch to every version at once.
* :func:`run_ir` / :func:`run_live` -- execute an IR binary on the 3.11 runtime, or the
  script itself with a live ``with model.trace(x):``.
"""
import base64
import hashlib
import json
import linecache
import os
import struct
import subprocess
import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import msgpack
import pytest
from hypothesis import strategies as st

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DRIVER = os.path.join(HERE, "client_driver.py")
VERSIONS = ("3.9", "3.10", "3.11", "3.12", "3.13")
WIDTH, OUT_WIDTH, N_MODULES = 8, 6, 7


# -- the model ------------------------------------------------------------------------------


def make_net():
    import torch

    mods = [torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.ReLU(),
            torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, OUT_WIDTH)]
    with torch.no_grad():
        for li, m in enumerate(mods):
            if isinstance(m, torch.nn.Linear):
                o, i = m.weight.shape
                w = torch.arange(o * i, dtype=torch.float64).reshape(o, i)
                m.weight.copy_((torch.sin(w * 0.7 + li) * 0.45).float())
                m.bias.copy_((torch.cos(torch.arange(o, dtype=torch.float64) * 1.3 + li) * 0.1).float())
    net = torch.nn.Sequential(*mods).eval()
    net.requires_grad_(False)
    return net


def make_input():
    import torch

    return torch.linspace(-1.5, 1.5, 24, dtype=torch.float64).reshape(3, 8).float()


def make_model():
    """``(model, x, calls)``: ``calls`` counts forward passes of the wrapped network."""
    from nnsight import NNsight

    net = make_net()
    calls = []
    net.register_forward_pre_hook(lambda mod, args: calls.append(1))
    return NNsight(net), make_input(), calls


# -- scripts --------------------------------------------------------------------------------


@dataclass
class Script:
    """A complete user script: ``source`` with the trace's ``with`` on line ``line``."""

    source: str
    line: int
    saved: Tuple[str, ...]
    closure: bool = False
    filename: str = ""
    features: Tuple[str, ...] = ()

    def __post_init__(self):
        if not self.filename:
            digest = hashlib.sha1(self.source.encode("utf-8")).hexdigest()[:12]
            self.filename = "xv_%s.py" % digest

    def with_features(self, features) -> "Script":
        self.features = tuple(features)
        return self

    def request(self) -> dict:
        return {"source": self.source, "filename": self.filename, "line": self.line, "closure": self.closure}


def script(body: str, helpers: str = "", saved=(), closure: bool = False, header: str = "with model.trace(x):"):
    """A Script from an (unindented) trace body and module-level helper code."""
    prelude = "import torch\n\n\n" + (helpers.rstrip("\n") + "\n\n\n" if helpers else "")
    line = prelude.count("\n") + 1
    text = prelude + header + "\n" + "".join("    " + l if l.strip() else "\n" for l in body.splitlines(True))
    if not text.endswith("\n"):
        text += "\n"
    return Script(text, line, tuple(saved), closure)


CONSTS = (0.5, -1.0, 2.0, 0.25, -0.75, 3.0, 1.5)

# kinds that read model[i].output into h{k} first
READ_KINDS = ("save", "arith", "if", "for", "while", "listcomp", "dictcomp", "genexp", "fstring", "walrus",
              "try", "lambda", "function", "closure", "class", "recursion", "match")
WRITE_KINDS = ("write_slice", "write_mul", "write_assign")
# a script run on a client must be valid there (CPython compiles the whole file first): closure-mode
# scripts (whose module-level code runs on every client) stay within 3.9 syntax
CLIENT_SAFE_KINDS = tuple(k for k in READ_KINDS if k != "match") + WRITE_KINDS


class _Builder:
    def __init__(self, choose, closure: bool):
        self.choose = choose  # _Hypothesis or _Seeded
        self.closure = closure
        self.body: List[str] = []
        self.helpers: List[str] = []
        self.saved: List[str] = []
        self.features: List[str] = []

    def c(self) -> str:
        return repr(self.choose.pick(CONSTS))

    def n(self) -> int:
        return self.choose.int(1, 4)

    def emit(self, *lines: str) -> None:
        for chunk in lines:
            self.body.extend(chunk.split("\n"))

    def helper(self, text: str) -> None:
        self.helpers.append(text.strip("\n"))

    def step(self, k: int, i: int, kind: str) -> None:
        h, v = "h%d" % k, "v%d" % k
        self.features.append(kind)
        if kind in WRITE_KINDS:
            if kind == "write_slice":
                self.emit("model[%d].output[:, %d] = %s" % (i, self.choose.int(0, OUT_WIDTH - 1), self.c()))
            elif kind == "write_mul":
                self.emit("model[%d].output[:] = model[%d].output * %s" % (i, i, self.c()))
            else:
                self.emit("model[%d].output = model[%d].output + %s" % (i, i, self.c()))
            return
        self.emit("%s = model[%d].output" % (h, i))
        self.saved.append(v)
        c, n = self.c(), self.n()
        if kind == "save":
            self.emit("%s = %s.save()" % (v, h))
        elif kind == "arith":
            op1, op2 = self.choose.pick("+-*"), self.choose.pick("+-*")
            self.emit("%s = ((%s %s %s) %s %s.abs() ** 2).save()" % (v, h, op1, c, op2, h))
        elif kind == "if":
            self.emit("if %s.sum() > %s:" % (h, c), "    %s = (%s * %s).save()" % (v, h, self.c()),
                      "elif %s.max() < 0:" % h, "    %s = %s.save()" % (v, h),
                      "else:", "    %s = (%s - %s).save()" % (v, h, self.c()))
        elif kind == "for":
            self.emit("acc%d = torch.zeros(%s.shape[0])" % (k, h), "for j in range(%d):" % n,
                      "    if j % 2:", "        continue",
                      "    acc%d = acc%d + %s[:, j] * %s" % (k, k, h, c), "%s = acc%d.save()" % (v, k))
        elif kind == "while":
            self.emit("j%d, s%d = 0, 0.0" % (k, k), "while j%d < %d:" % (k, n),
                      "    s%d += float(%s[0, j%d]) * %s" % (k, h, k, c), "    j%d += 1" % k,
                      "%s = torch.tensor(s%d).save()" % (v, k))
        elif kind == "listcomp":
            self.emit("%s = torch.stack([%s[:, j].sum() * %s for j in range(%d) if j != 1 or %d]).save()"
                      % (v, h, c, n, n))
        elif kind == "dictcomp":
            self.emit('d%d = {f"c{j}": %s[:, j] for j in range(%d)}' % (k, h, n),
                      'keys%d = sorted({key for key in d%d})' % (k, k),
                      "%s = torch.stack([d%d[key] * %s for key in keys%d]).save()" % (v, k, c, k))
        elif kind == "genexp":
            self.emit("%s = torch.tensor(sum(float(t) * %s for t in %s[0])).save()" % (v, c, h))
        elif kind == "fstring":
            self.emit('tag%d = f"m%d:{%s.shape[-1]}:{%s!r}:{%s:>8.3f}:{%d!s:^5}"' % (k, i, h, c, c, n),
                      "label%d = tag%d.save()" % (k, k),
                      "%s = (%s * len(tag%d)).save()" % (v, h, k))
            self.saved.append("label%d" % k)
        elif kind == "walrus":
            self.emit("if (s%d := %s.sum()) > %s:" % (k, h, c), "    %s = (%s / 2 + s%d).save()" % (v, h, k),
                      "else:", "    %s = (%s * 2 - s%d).save()" % (v, h, k))
        elif kind == "try":
            self.emit("try:", "    q%d = [%s, 2.0][%d]" % (k, c, self.choose.int(0, 3)),
                      "except IndexError as err:", "    q%d = len(str(err))" % k,
                      "finally:", "    pass", "%s = (%s * q%d).save()" % (v, h, k))
        elif kind == "lambda":
            self.emit("f%d = lambda t, a=%s: t.clamp(min=-abs(a), max=abs(a)) + a" % (k, c),
                      "%s = f%d(%s).save()" % (v, k, h))
        elif kind == "function":
            self.helper("def helper_%d(t, a=%s, *, shift=%s):\n    return torch.relu(t) * a + shift" % (k, c, self.c()))
            self.emit("%s = helper_%d(%s, shift=%s).save()" % (v, k, h, self.c()))
        elif kind == "closure":
            self.helper("def make_scaler_%d(c):\n    def scale(t):\n        return t * c + offset_%d\n"
                        "    return scale\n\n\noffset_%d = %s\nscaler_%d = make_scaler_%d(%s)"
                        % (k, k, k, self.c(), k, k, c))
            self.emit("other%d = make_scaler_%d(%s)" % (k, k, self.c()),
                      "%s = (scaler_%d(%s) + other%d(%s)).save()" % (v, k, h, k, h))
        elif kind == "class":
            self.helper(
                "class Acc_%d:\n    scale = %s\n\n    def __init__(self, w):\n        self.w = w\n"
                "        self.parts = []\n\n    def add(self, t):\n        self.parts.append(t * self.w * self.scale)\n"
                "        return self\n\n    def total(self):\n        return torch.stack(self.parts).sum(0)\n\n"
                "    @property\n    def count(self):\n        return len(self.parts)" % (k, self.c()))
            self.emit("acc%d = Acc_%d(%s).add(%s).add(%s + 1)" % (k, k, c, h, h),
                      "%s = (acc%d.total() * acc%d.count).save()" % (v, k, k))
        elif kind == "recursion":
            self.helper("def tri_%d(n):\n    return 0 if n == 0 else n + tri_%d(n - 1)" % (k, k))
            self.emit("%s = (%s * tri_%d(%d)).save()" % (v, h, k, n))
        elif kind == "match":
            self.emit("match %d:" % n, "    case 1 | 2:", "        %s = (%s + 1).save()" % (v, h),
                      "    case _:", "        %s = (%s - 1).save()" % (v, h))
        else:  # pragma: no cover
            raise AssertionError(kind)

    def script(self, final: bool) -> Script:
        if final:
            self.emit("out = model.output.save()")
            self.saved.append("out")
        helpers = "\n\n\n".join(self.helpers)
        if self.closure:
            return script("\n".join(self.body), helpers, self.saved, closure=True).with_features(self.features)
        body = (helpers + "\n\n" if helpers else "") + "\n".join(self.body)
        return script(body, "", self.saved).with_features(self.features)


@st.composite
def programs(draw, closure: bool = False, kinds=READ_KINDS + WRITE_KINDS):
    """Intervention scripts on the MLP: module accesses in forward order, 2-5 steps."""
    return _build(_Hypothesis(draw), closure, kinds)


def seeded_program(seed: int, closure: bool = False, kinds=READ_KINDS + WRITE_KINDS) -> Script:
    """A script of the same grammar drawn with ``random.Random(seed)`` (no hypothesis engine)."""
    import random

    return _build(_Seeded(random.Random(seed)), closure, kinds)


class _Hypothesis:
    """The builder's choices, drawn by hypothesis (so failures shrink)."""

    def __init__(self, draw):
        self.draw = draw

    def pick(self, seq):
        return self.draw(st.sampled_from(seq))

    def int(self, lo, hi):
        return self.draw(st.integers(lo, hi))

    def distinct(self, lo, hi, n):
        return self.draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n, unique=True))


class _Seeded:
    """The builder's choices, drawn from a seeded ``random.Random``."""

    def __init__(self, rng):
        self.rng = rng

    def pick(self, seq):
        return self.rng.choice(list(seq))

    def int(self, lo, hi):
        return self.rng.randint(lo, hi)

    def distinct(self, lo, hi, n):
        return self.rng.sample(range(lo, hi + 1), n)


def _build(choose, closure, kinds) -> Script:
    b = _Builder(choose, closure)
    count = choose.int(2, 5)
    indices = sorted(choose.distinct(0, N_MODULES - 1, count))
    for k, i in enumerate(indices):
        b.step(k, i, choose.pick(kinds))
    return b.script(final=choose.pick((False, True)) or not b.saved)


# -- running on the 3.11 runtime ------------------------------------------------------------


def run_ir(data: bytes, model, x, extra: Optional[dict] = None) -> Dict[str, object]:
    """Decode an IR binary and run it as the body of ``model.trace(x)``; the saved values."""
    import torch

    from compiler.ir import decode
    from runtime.builder import CompiledProgram

    program = decode(data)
    compiled = CompiledProgram(program)
    # the scripts whose body opens invokes are traced as `with model.trace() as tracer:`
    tracer = model.trace() if 0 in compiled.invoke_parents else model.trace(x)  # (the IR's invoke facts)
    ns = {"model": model, "x": x, "torch": torch, "tracer": tracer}
    ns.update(extra or {})
    return dict(tracer.run_program(compiled, ns))


def run_local_server(data: bytes, model, x) -> Dict[str, object]:
    """Run a closed program as the ``remote='local'`` server does (user modules hidden)."""
    from compiler.ir import decode
    from compiler.ir.request import Request, decode_result, encode_request
    from compiler.ir.values import decode_value, encode_value
    from nnsight.tracing.remote import LocalServer, model_key

    key = model_key(model)
    server = LocalServer()
    server.host(key, model)
    request = Request(decode(data), key, "trace", encode_value((x,)), encode_value({}))
    return decode_value(decode_result(server.handle(encode_request(request))))


def run_live(s: Script, model, x) -> Dict[str, object]:
    """Run the script's own text on this Python (a live trace); its saved variables."""
    import torch

    linecache.cache[s.filename] = (len(s.source), None, s.source.splitlines(True), s.filename)
    g = {"model": model, "x": x, "torch": torch, "__name__": "xv_live", "__file__": s.filename}
    lines = s.source.splitlines(True)
    exec(compile("".join(lines[: s.line - 1]), s.filename, "exec"), g)  # imports and helpers
    before = set(g)
    exec(compile("\n" * (s.line - 1) + "".join(lines[s.line - 1:]), s.filename, "exec"), g)
    from nnsight.tracing.unsaved import Unsaved

    # what the trace wrote back (not the tracer of `with model.trace() as tracer:`, nor the
    # placeholders that make reading an unsaved name raise NotSavedError)
    return {name: g[name] for name in g
            if name not in before and name != "tracer" and not isinstance(g[name], Unsaved)}


def same(a: Dict[str, object], b: Dict[str, object]) -> Optional[str]:
    """None when both result dicts are equal (tensors exactly), else what differs."""
    import torch

    if set(a) != set(b):
        return "saved names differ: %s vs %s" % (sorted(a), sorted(b))
    for name in a:
        x, y = a[name], b[name]
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
                    and x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)):
                return "%s differs: %r vs %r" % (name, x, y)
        elif x != y or type(x) is not type(y):
            return "%s differs: %r vs %r" % (name, x, y)
    return None


# -- byte comparisons -------------------------------------------------------------------------


def split_binary(data: bytes) -> Tuple[dict, bytes]:
    """``(header map, compressed body bytes)`` of an IR binary."""
    (size,) = struct.unpack_from(">I", data, 4)
    return msgpack.unpackb(data[8:8 + size], raw=False), data[8 + size:]


def normalized(data: bytes) -> bytes:
    """The binary with ``header.python`` (the client's version, differs by design) blanked."""
    header, body = split_binary(data)
    header["python"] = ""
    packed = msgpack.packb(header, use_bin_type=True)
    return data[:4] + struct.pack(">I", len(packed)) + packed + body


# -- clients ----------------------------------------------------------------------------------

_ENVS: Optional[Tuple[Dict[str, str], str]] = None


def client_pythons() -> Tuple[Dict[str, str], str]:
    """``({version: python}, messages)`` from ``scripts/pyenvs.sh`` (run once per session)."""
    global _ENVS
    if _ENVS is None:
        proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "pyenvs.sh")] + list(VERSIONS),
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError("scripts/pyenvs.sh failed:\n" + proc.stderr)
        found = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line.strip())
        _ENVS = (found, proc.stderr)
    return _ENVS


class Client:
    """One ``client_driver.py`` process on one client Python."""

    def __init__(self, version: str, python: str):
        self.version = version
        env = dict(os.environ, PYTHONPATH=ROOT, PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1")
        env.pop("PYTHONSTARTUP", None)
        self.proc = subprocess.Popen([python, "-u", DRIVER], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, encoding="utf-8")
        self.python = None
        self._stderr: List[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stderr:
            self._stderr.append(line)

    def send(self, scripts: List[Script]) -> None:
        self.proc.stdin.write(json.dumps({"programs": [s.request() for s in scripts]}) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> List[dict]:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("client %s died:\n%s" % (self.version, "".join(self._stderr[-40:])))
        reply = json.loads(line)
        self.python = reply["python"]
        assert not reply["torch"], "the %s client imported torch" % self.version
        return reply["results"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except Exception:
                self.proc.kill()


class Clients:
    """The drivers of every available client version."""

    def __init__(self, pythons: Dict[str, str]):
        self.clients = {v: Client(v, p) for v, p in pythons.items()}

    @property
    def versions(self) -> List[str]:
        return list(self.clients)

    def compile(self, scripts: List[Script], versions=None) -> Dict[str, List[bytes]]:
        """``{version: [IR binary per script]}``; every version compiles the batch concurrently.

        A script a client fails to compile fails the test with that client's traceback.
        """
        chosen = [v for v in (versions or self.clients) if v in self.clients]
        for v in chosen:
            self.clients[v].send(scripts)
        replies = {v: self.clients[v].receive() for v in chosen}  # all of them, even if one failed
        out: Dict[str, List[bytes]] = {}
        for v, results in replies.items():
            blobs = []
            for s, r in zip(scripts, results):
                if r["error"]:
                    raise AssertionError("client Python %s failed to compile %s:\n%s\n--- script ---\n%s"
                                         % (self.clients[v].python, s.filename, r["error"], s.source))
                blobs.append(base64.b64decode(r["ir"]))
            out[v] = blobs
        return out

    def close(self) -> None:
        for c in self.clients.values():
            c.close()


def require_all_versions(pythons: Dict[str, str], messages: str) -> None:
    missing = [v for v in VERSIONS if v not in pythons]
    if missing:
        pytest.skip("CPython %s not installed (pyenv): %s" % (
            ", ".join(missing), " ".join(l for l in messages.splitlines() if "MISSING" in l)))
