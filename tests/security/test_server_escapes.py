"""Hostile jobs sent through the real HTTP server (a subprocess on loopback), once per tier.

Each job is written by hand as an attacker would (IR text, not our client, which would refuse most
of them before sending) and submitted with the attacker's key. Each must end in a clean error -- a
400 at admission, or a job in ERROR whose error is typed, names no server file and leaks nothing --
and leave no trace, checked after every job:

* no marker file (every write attempt targets one), nothing new in the data directory;
* no connection received by a listening socket the test owns (network attempts target it);
* no child process of the server, no thread of the server left over;
* no leaked value: the server's environment holds a canary, which no job status, log or error shows;
* a legitimate job sent right after (queued behind the hostile one) returns exactly the values of the
  first legitimate job, on a model whose every layer it reads: the server still serves, unchanged.

``TIERS`` lists the tiers whose runner the server has; each test runs in each. A case whose outcome
depends on the tier says so (``IN_PROCESS``: what only the trusted, in-process runner does).
"""
import json
import os
import socket
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from loader_attacks import ir_text, payload
from test_loader_hostile import CASES as LOADER_CASES
from test_redteam import CASES as REDTEAM_CASES

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
from serverproc import ServerProcess, _env, create_key  # noqa: E402 (tests/server's helper)

TIERS = ("trusted", "untrusted")
KEY_HEADER = "ndif-api-key"
JOB_TIME_LIMIT_S = 3.0  # the attacker key's own wall-time limit (a CPU bomb runs into it)
RESULT_LIMIT = 200_000  # the attacker key's own result-size limit
CANARY = "nns-canary-7f3a9c"
THREAD_SLACK = 6

TORCH = 'binding torch module "torch"'
NP = 'binding np module "numpy"'
NN = 'binding nnsight module "nnsight"'
LOGGING = 'binding logging module "logging"'
TF = 'binding tf module "transformers"'
W = "w = model.transformer.h[0].mlp.c_fc.weight\n"

REFUSED = ("ServerImportError", "ServerRefusal", "LoadError")
INTEGRITY = ("IntegrityError",)

# The loader's and the red team's cases that try to write the marker file: shell commands through
# module attributes, introspection, file entry points of torch and numpy, pickles, native libraries.
REUSED = [("loader: " + c[0], c[1], c[2], REFUSED) for c in LOADER_CASES if "{M}" in c[2]] + \
         [("redteam: " + c[0], c[1], c[2], REFUSED) for c in REDTEAM_CASES if "{M}" in c[2]]

# (id, bindings, body, error types). Placeholders: {M} marker file, {PORT} the test's listening
# socket, {SELF} the server's own port, {DATA} its data directory, {DB} its database, {VICTIM}
# another key's finished job.
CASES = REUSED + [
    # -- shell commands: builtins, frames, code objects -------------------------------------------
    ("__import__ through __builtins__", "", '__builtins__["__import__"]("os").system("touch {M}")',
     REFUSED + ("TypeError", "KeyError")),
    ("subclasses walk to os", "", 'c = [k for k in ().__class__.__base__.__subclasses__() if "wrap_close" in '
     'k.__name__][0]\nc.__init__.__globals__["system"]("touch {M}")', REFUSED),
    ("code object replaced", "", "f = lambda: 0\ng = f.__code__", REFUSED),
    ("frame of a generator", "", "g = (i for i in [1])\nfr = g.gi_frame.f_back.f_globals", REFUSED),
    ("eval of a string", "", 'eval("__import__(\'os\').system(\'touch {M}\')")', REFUSED),
    ("exec of a string", "", 'exec("open(\'{M}\', \'w\')")', REFUSED),
    ("compile() a code object", "", 'c = compile("1", "x", "eval")', REFUSED),
    ("open() for writing", "", 'open("{M}", "w").write("x")', REFUSED),
    # -- pickles and native libraries --------------------------------------------------------------
    ("torch.load of a result file", TORCH, 'x = torch.load("{DATA}/blobs/{VICTIM}.result", weights_only=False)',
     REFUSED),
    ("numpy.load with pickles", NP, 'x = np.load("{DB}", allow_pickle=True)', REFUSED),
    ("torch.classes.load_library", TORCH, 'torch.classes.load_library("{M}.so")', REFUSED),
    ("ctypes through numpy", NP, "p = np.ctypeslib.ctypes.CDLL(None).system", REFUSED),
    # -- network: the server itself and another loopback port ----------------------------------------
    ("torch.hub download to the test's port", TORCH,
     'torch.hub.download_url_to_file("http://127.0.0.1:{PORT}/x", "{M}")', REFUSED),
    ("model_zoo fetches a result from the server", TORCH,
     'x = torch.utils.model_zoo.load_url("http://127.0.0.1:{SELF}/v1/requests/{VICTIM}/result")', REFUSED),
    ("TCPStore connects to the test's port", TORCH, 's = torch.distributed.TCPStore("127.0.0.1", {PORT}, 2, False)',
     REFUSED),
    ("init_process_group over tcp", TORCH, 'torch.distributed.init_process_group("gloo", '
     'init_method="tcp://127.0.0.1:{PORT}", rank=0, world_size=2)', REFUSED),
    ("logging SocketHandler", LOGGING, 'h = logging.handlers.SocketHandler("127.0.0.1", {PORT})\nh.emit(None)',
     REFUSED),
    ("logging HTTPHandler to the server", LOGGING,
     'h = logging.handlers.HTTPHandler("127.0.0.1:{SELF}", "/v1/requests")', REFUSED),
    ("numpy DataSource", NP, 'd = np.lib.npyio.DataSource().open("http://127.0.0.1:{PORT}/")', REFUSED),
    ("transformers from a URL", TF, 'm = tf.AutoModel.from_pretrained("http://127.0.0.1:{PORT}/x")', REFUSED),
    ("socket through a server module", TORCH, 's = torch.multiprocessing.reductions.socket', REFUSED),
    # -- reading the data directory, the key database, the environment, other jobs' results ---------
    ("numpy.fromfile of the key database", NP, 'x = np.fromfile("{DB}", dtype=np.uint8)', REFUSED),
    ("torch.from_file of the key database", TORCH, 'x = torch.from_file("{DB}", size=64)', REFUSED),
    ("loadtxt of /proc/self/environ", NP, 'x = np.loadtxt("/proc/self/environ", dtype=str)', REFUSED),
    ("genfromtxt of /proc/self/environ", NP, 'x = np.genfromtxt("/proc/self/environ", dtype=str)', REFUSED),
    ("os.environ through torch", TORCH + "\n" + NN, 'out = nnsight.save(dict(torch.os.environ))', REFUSED),
    ("another job's result file", NP, 'x = np.fromfile("{DATA}/blobs/{VICTIM}.result", dtype=np.uint8)', REFUSED),
    ("config files of the data directory", TF, 'c = tf.AutoConfig.from_pretrained("{DATA}")', REFUSED),
    ("tokenizer reads the data directory", "", 't = model.tokenizer.from_pretrained("{DATA}")', REFUSED),
    ("memmap of the database", NP, 'x = np.memmap("{DB}", mode="r")', REFUSED),
    # -- fork and thread bombs, threads that outlive the job ----------------------------------------
    ("fork through os", TORCH, "torch.os.fork()", REFUSED),
    ("multiprocessing Process", TORCH, "torch.multiprocessing.Process(target=print).start()", REFUSED),
    ("multiprocessing Pool", TORCH, "p = torch.multiprocessing.Pool(64)", REFUSED),
    ("DataLoader worker processes", TORCH, "d = list(torch.utils.data.DataLoader([1, 2], num_workers=4))", REFUSED),
    ("threading.Thread", LOGGING, "for i in range(100):\n    logging.threading.Thread(target=print).start()",
     REFUSED),
    ("torch.jit.fork", TORCH, "def f():\n    return 1\nfu = torch.jit.fork(f)", REFUSED),
    ("weakref.finalize runs after the job", 'binding weakref module "weakref"',
     "class A:\n    pass\na = A()\nweakref.finalize(model, print, 'late')", REFUSED),
    ("a logging handler outlives the job", LOGGING,
     "class H(logging.Handler):\n    def emit(self, r):\n        pass\nlogging.getLogger('torch').addHandler(H())",
     REFUSED),
    ("more intra-op threads", TORCH, "torch.set_num_threads(512)", REFUSED),
    # -- memory and CPU bombs ------------------------------------------------------------------------
    ("a 128 TB tensor", TORCH, "x = torch.empty(2 ** 45)", ("RuntimeError", "MemoryError")),
    ("a 4 EB bytearray", "", "x = bytearray(2 ** 62)", ("MemoryError", "OverflowError")),
    ("a huge string", "", 'x = "a" * (2 ** 62)', ("MemoryError", "OverflowError")),
    ("unbounded recursion", "", "def f():\n    return f()\nf()", ("RecursionError",)),
    ("a result over the key's limit", TORCH + "\n" + NN, "out = nnsight.save(torch.randn(1_000_000))",
     ("ResultTooLargeError",)),
    ("CPU bomb past the key's time limit", "", "while True:\n    pass", ("JobTimeoutError",)),
    # -- writing the weights -------------------------------------------------------------------------
    ("in-place multiply of a weight", "", W + "w.mul_(2.0)", INTEGRITY),
    ("nn.init zeroes a weight", TORCH, W + "torch.nn.init.zeros_(w)", INTEGRITY),
    ("copy_ into a weight", TORCH, W + "w.copy_(torch.zeros_like(w))", INTEGRITY),
    ("item assignment into a weight", "", W + "w[0] = 0.0", INTEGRITY),
    ("detach() then zero_()", "", W + "w.detach().zero_()", INTEGRITY),
    ("share_memory_ moves a weight", "", W + "w.share_memory_()", INTEGRITY + ("ServerRefusal",)),  # (refused first)
    ("the tied embedding written through lm_head", "", "model.lm_head.weight.add_(1.0)", INTEGRITY),
    ("replace a weight", TORCH, "model.transformer.h[0].mlp.c_fc.weight = torch.nn.Parameter(torch.zeros(2))",
     REFUSED),
    ("parametrize a hosted layer", TORCH, "class P(torch.nn.Module):\n    def forward(self, x):\n        return 0 * x\n"
     "torch.nn.utils.parametrize.register_parametrization(model.transformer.h[0].mlp.c_fc, 'weight', P())",
     INTEGRITY + REFUSED),
    ("weight_norm on a hosted layer", TORCH, "torch.nn.utils.weight_norm(model.transformer.h[0].mlp.c_fc)",
     INTEGRITY + REFUSED),
    # -- hooks and modes -----------------------------------------------------------------------------
    ("forward hook on a layer", "", "h = model.transformer.h[0].register_forward_hook(lambda m, i, o: 0 * o)",
     REFUSED),
    ("global module forward hook", TORCH,
     "h = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: None)", REFUSED),
    ("tensor hook on a weight", "", W + "h = w.register_hook(print)", REFUSED + ("RuntimeError",)),
    ("a __torch_function__ mode left active", TORCH, "torch.overrides.TorchFunctionMode().__enter__()",
     INTEGRITY),
    ("pop torch's mode stack through a device", TORCH, "torch.device('cpu').__exit__(None, None, None)", REFUSED),
    # -- raw memory: numpy builds an array over the address an object's __array_interface__ names --------
    ("__array_interface__ added by a metaclass", NP + "\n" + NN,
     "class M(type):\n    def __new__(m, n, b, d):\n        d['__array_' + 'interface__'] = {{'shape': (8,), "
     "'typestr': '|u1', 'data': (id(m), False), 'version': 3}}\n        return super().__new__(m, n, b, d)\n"
     "class X(metaclass=M):\n    pass\nr = nnsight.save(bytes(np.asarray(X())))", REFUSED),
    ("__array_interface__ in an instance's __dict__", NP + "\n" + NN,
     "class X:\n    pass\nx = X()\nvars(x)['__array_' + 'interface__'] = {{'shape': (8,), 'typestr': '|u1', "
     "'data': (id(x), False), 'version': 3}}\nr = nnsight.save(bytes(np.asarray(x)))", REFUSED),
    ("saved-tensor hooks left active", TORCH, "torch.autograd.graph.saved_tensors_hooks(print, print).__enter__()",
     INTEGRITY),
    ("autocast left on", TORCH, "torch.autocast('cpu').__enter__()", INTEGRITY),
    # -- changing the server's modules and classes ---------------------------------------------------
    ("rebind torch.add", TORCH, "torch.add = print", REFUSED),
    ("setattr on torch.nn.functional", TORCH, 'setattr(torch.nn.functional, "gelu", print)', REFUSED),
    ("rebind a Tensor method", TORCH, "torch.Tensor.add = print", REFUSED),
    ("type.__setattr__ on Tensor", TORCH, "type.__setattr__(torch.Tensor, '__add__', print)", REFUSED),
    ("object.__setattr__ on a module", TORCH, "object.__setattr__(torch, 'add', print)", REFUSED + ("TypeError",)),
    ("delete torch.add", TORCH, 'delattr(torch, "add")', REFUSED),
    ("math.pi", 'binding math module "math"', "math.pi = 3", REFUSED),
    ("nn.Module.__call__", TORCH, "torch.nn.Module.__call__ = print", REFUSED),
    ("the module table", 'binding c module "compiler"', 'c.access.REFUSED_ENTRIES.clear()', REFUSED),
    ("a hosted layer's forward", "", "model.transformer.h[0].forward = print", REFUSED),
    ("the hosted config", "", "model.config.n_layer = 1", REFUSED),
]

# Version-counter bypasses: writes to a weight's memory through an alias autograd does not count,
# which the integrity check cannot see. The loader refuses the alias (by storage: any tensor over
# the hosted model's memory; runtime/loader/hosted_memory.py), so in the trusted tier the job ends in
# ServerRefusal NN404 before it writes; the untrusted tier's sandbox runs a job on its own copy.
# tests/security/test_redteam.py holds the other routes (numpy functions, DLPack, set_, copy...).
ALIAS_CASES = [
    ("write through .data", "", W + "w.data.zero_()"),
    ("write through a numpy view", "", W + "a = w.detach().numpy()\na[:] = 0"),
    ("write through the untyped storage", "", W + "w.untyped_storage().fill_(0)"),
    ("write through a numpy class from type()", NP, W + "type(np.float32(1.0))(w.detach())[:] = 0"),
    ("write through np.float32", NP, W + "np.float32(w.detach())[:] = 0"),
]
IN_PROCESS = {"trusted"}  # the tiers whose jobs run in the server process (ALIAS_CASES are refused there)
# Tiers whose jobs' code runs against its own copy of the model (the untrusted tier's sandbox child
# holds a weightless one): a change to that copy dies with the child, so an INTEGRITY case may also
# complete -- it must still leave no trace (the next job sees the hosted model unchanged, and the
# model process checks it intact after every job all the same).
OWN_COPY_TIERS = {"untrusted"}

LEGIT = ir_text("a = model.transformer.h[0].output[0].sum().save()\nout = model.lm_head.output.sum().save()\n",
                assigned=["a", "out"])


class Listener:
    """A loopback socket the test owns: a job that connects to it leaves a pending connection."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def connections(self) -> int:
        n = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return n
            conn.close()
            n += 1


class Hostile:
    """One server subprocess per tier, its attacker and victim keys, and the checks after each job."""

    def __init__(self, tier: str, root: str, gpt2_path: str, gpt2) -> None:
        self.tier = tier
        self.root = root
        self.data = os.path.join(root, "data")
        self.marker_dir = os.path.join(root, "marker")
        os.makedirs(self.marker_dir)
        self.marker = os.path.join(self.marker_dir, "pwned")
        self.model = gpt2
        self.listener = Listener()
        self.victim_key = create_key(self.data, "victim", "--tier", "trusted")
        self.key = create_key(self.data, "attacker", "--tier", tier, "--job-time-limit", str(JOB_TIME_LIMIT_S),
                              "--max-result-bytes", str(RESULT_LIMIT), "--max-in-flight", "4")
        os.environ["NNSIGHT_TEST_CANARY"] = CANARY  # the server's environment (a job must not read it)
        try:
            self.server = ServerProcess(self.data, ["gpt2=%s" % gpt2_path], "--job-time-limit", "60").start()
        finally:
            del os.environ["NNSIGHT_TEST_CANARY"]
        self.proc = psutil.Process(self.server.proc.pid)
        self.http = httpx.Client(base_url=self.server.url, timeout=30.0)
        victim = self.submit(payload(gpt2, LEGIT), self.victim_key)
        self.victim = self.wait(victim.json()["id"], self.victim_key)["id"]
        first = self.submit(payload(gpt2, LEGIT))
        job = self.wait(first.json()["id"])
        assert job["status"] == "COMPLETED", job
        self.expected = self.http.get("/v1/requests/%s/result" % job["id"], headers={KEY_HEADER: self.key}).content
        self.threads = self.proc.num_threads()
        self.children = len(self.strays())  # processes that are not the sandbox's own
        self.data_files = self.listing()

    def fill(self, body: str) -> str:
        return body.format(M=self.marker, PORT=self.listener.port, SELF=self.server.port, DATA=self.data,
                           DB=os.path.join(self.data, "jobs.sqlite3"), VICTIM=self.victim)

    def submit(self, data: bytes, key: str = None) -> httpx.Response:
        return self.http.post("/v1/requests", content=data, headers={KEY_HEADER: key or self.key,
                                                                     "content-type": "application/octet-stream"})

    def wait(self, job_id: str, key: str = None, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.http.get("/v1/requests/%s" % job_id, headers={KEY_HEADER: key or self.key}).json()
            if job["status"] in ("COMPLETED", "ERROR", "CANCELLED"):
                return job
            time.sleep(0.02)
        raise AssertionError("job %s did not finish in %gs:\n%s" % (job_id, timeout, self.server.log()))

    def listing(self) -> set:
        found = set()
        for top, _, files in os.walk(self.data):
            for name in files:
                rel = os.path.relpath(os.path.join(top, name), self.data)
                if not rel.startswith("blobs" + os.sep) and not rel.startswith("jobs.sqlite3"):
                    found.add(rel)
        return found

    def run_hostile(self, bindings: str, body: str):
        """Submit the hostile job and a legitimate one right behind it; both outcomes."""
        try:
            text = ir_text(self.fill(body) + "\n", bindings)
            data = payload(self.model, text)
        except Exception as error:  # noqa: BLE001 - refused before it could even be encoded: clean
            return ("unsendable", repr(error)), None
        hostile = self.submit(data)
        legit = self.submit(payload(self.model, LEGIT))
        assert legit.status_code == 202, legit.text
        if hostile.status_code != 202:
            outcome = ("refused", hostile.status_code, hostile.json())
        else:
            outcome = ("job", self.wait(hostile.json()["id"]))
        return outcome, self.wait(legit.json()["id"])

    def check_no_trace(self, legit: dict) -> None:
        assert legit["status"] == "COMPLETED", legit
        got = self.http.get("/v1/requests/%s/result" % legit["id"], headers={KEY_HEADER: self.key}).content
        assert got == self.expected, "a legitimate job right after gave other values: the model was changed"
        assert not os.path.exists(self.marker) and os.listdir(self.marker_dir) == [], "a file was written"
        assert self.listener.connections() == 0, "the job connected to the test's socket"
        assert len(self.strays()) <= self.children, "the job started a process"
        # (the HTTP server's thread pool may grow by a few idle threads; a thread bomb would not fit)
        assert self.proc.num_threads() <= self.threads + THREAD_SLACK, "threads outlived the job"
        assert self.listing() == self.data_files, "files appeared in the data directory"

    def strays(self, settle_s: float = 5.0) -> list:
        """The server's descendant processes, less the sandbox's: its warm template and the template's
        own children (a spare child forked ahead, one being reaped), as long as none of those has
        children of its own (a sandboxed job cannot fork; a process it started would show here)."""
        deadline = time.monotonic() + settle_s
        while True:
            found = []
            for child in self.proc.children():
                try:
                    template = "runtime.sandbox.template" in " ".join(child.cmdline())
                    if not template:
                        found += [child] + child.children(recursive=True)
                        continue
                    kids = child.children()
                    found += [g for kid in kids for g in kid.children(recursive=True)]
                    found += kids[2:]  # more than a spare and one being reaped
                except psutil.NoSuchProcess:
                    continue
            if not found or time.monotonic() >= deadline:
                return found
            time.sleep(0.1)

    def close(self) -> None:
        self.http.close()
        self.server.stop()
        self.listener.sock.close()


@pytest.fixture(scope="module", params=TIERS)
def hostile(request, tmp_path_factory, gpt2_path):
    from nnsight import LanguageModel

    env = Hostile(request.param, str(tmp_path_factory.mktemp("escapes-" + request.param)), gpt2_path,
                  LanguageModel(gpt2_path))
    yield env
    env.close()


def _assert_clean(outcome, types) -> None:
    text = json.dumps(outcome, default=str)
    assert CANARY not in text, "the job leaked the server's environment"
    if outcome[0] == "unsendable":
        return
    if outcome[0] == "refused":
        status, body = outcome[1], outcome[2]
        assert 400 <= status < 500 and body.get("code") and body.get("message"), outcome
        return
    job = outcome[1]
    assert job["status"] == "ERROR", "the hostile job was not refused: %s" % job
    error = job["error"]
    assert error["type"].rsplit(".", 1)[-1] in types, error
    assert error["message"] or error["type"] in ("builtins.MemoryError", "builtins.NotImplementedError"), error
    for frame in error["frames"]:
        assert not frame[0].startswith(("/", "runtime", "nnsight", "compiler")), \
            "the error names a server file: %s" % (frame,)


@pytest.mark.parametrize("name,bindings,body,types", CASES, ids=[c[0] for c in CASES])
def test_hostile_job_is_refused_and_leaves_no_trace(hostile, name, bindings, body, types):
    outcome, legit = hostile.run_hostile(bindings, body)
    contained = hostile.tier in OWN_COPY_TIERS and types[0] == "IntegrityError"
    if contained and outcome[0] == "job":
        # the job changed (or failed to change) its own weightless copy: it may complete or fail as
        # the copy makes it (a meta tensor has no storage to share), as long as it leaves no trace
        if outcome[1]["status"] == "ERROR":
            _assert_clean(outcome, (outcome[1]["error"]["type"].rsplit(".", 1)[-1],))
    else:
        _assert_clean(outcome, types)
    hostile.check_no_trace(legit)


def test_another_keys_job_cannot_be_read(hostile):
    headers = {KEY_HEADER: hostile.key}
    for path in ("/v1/requests/%s", "/v1/requests/%s/result"):
        answer = hostile.http.get(path % hostile.victim, headers=headers)
        assert answer.status_code == 404 and answer.json()["code"] == "unknown_request"
    assert hostile.http.delete("/v1/requests/%s" % hostile.victim, headers=headers).status_code == 404
    assert hostile.http.get("/v1/requests/%s" % hostile.victim,
                            headers={KEY_HEADER: hostile.victim_key}).json()["status"] == "COMPLETED"


def test_refusals_and_kills_are_audited_without_secrets(hostile):
    """One job of each kind of audited event: the audit log names the attacker's key id, never a secret."""
    own_copy = hostile.tier in OWN_COPY_TIERS  # a weight write there changes only the job's own copy
    for bindings, body in ((TORCH, "torch.add = print"), ("", W + "w.mul_(2.0)"),
                           (TORCH + "\n" + NN, "out = nnsight.save(torch.randn(1_000_000))"),
                           ("", "while True:\n    pass")):
        outcome, legit = hostile.run_hostile(bindings, body)
        if not (own_copy and "mul_" in body):
            assert outcome[0] == "job" and outcome[1]["status"] == "ERROR", outcome
        hostile.check_no_trace(legit)
    out = subprocess.run([sys.executable, "-m", "runtime.server", "audit", "--since", "1h", "--data-dir",
                          hostile.data], capture_output=True, text=True, env=_env(), check=True, timeout=60).stdout
    events = {line.split()[2] for line in out.splitlines() if line.strip()}
    assert ({"refused", "limit", "killed"} | (set() if own_copy else {"integrity"})) <= events, out[-3000:]
    assert hostile.key not in out and hostile.victim_key not in out and CANARY not in out
    assert hostile.key not in hostile.server.log()


@pytest.mark.parametrize("forged", [0, 1, 7, 1 << 20, (1 << 60) + 3])
def test_a_fabricated_hosted_object_handle_is_refused_and_leaves_no_trace(hostile, forged):
    """The sandbox holds a handle to the KV cache; the job makes one up (a guess, another job's) and
    saves it beside its own: the model process refuses the whole result, names nothing it holds,
    and the next job is right."""
    if hostile.tier != "untrusted":
        pytest.skip("handles to objects of the model process exist only in the untrusted tier's sandbox")
    body = ('c = model.output.past_key_values\nf = type(c)(%d, "DynamicCache")\n'
            'out = nnsight.save({{"stolen": f, "own": c}})' % forged)  # (braces doubled: the body is a format string)
    outcome, legit = hostile.run_hostile(NN, body)
    assert outcome[0] == "job", outcome
    _assert_clean(outcome, ("SandboxProtocolError",))
    assert "never sent" in outcome[1]["error"]["message"] and "Dynamic" not in json.dumps(outcome[1]["error"])
    hostile.check_no_trace(legit)


def test_there_are_at_least_sixty_hostile_jobs():
    assert len(CASES) + len(ALIAS_CASES) >= 60


# Last in each tier: were one of these writes to get through, every test after it would see the
# changed weights.
@pytest.mark.parametrize("name,bindings,body", ALIAS_CASES, ids=[c[0] for c in ALIAS_CASES])
def test_version_counter_bypass(hostile, name, bindings, body):
    outcome, legit = hostile.run_hostile(bindings, body)
    if hostile.tier in IN_PROCESS:
        _assert_clean(outcome, ("ServerRefusal",))
        error = outcome[1]["error"]
        assert "NN404" in error["message"] and "hosted model" in error["message"], error
        assert any(frame[0] == "attack.py" for frame in error["frames"]), error  # the user's line
        out = subprocess.run([sys.executable, "-m", "runtime.server", "audit", "--since", "1h", "--data-dir",
                              hostile.data], capture_output=True, text=True, env=_env(), check=True,
                             timeout=60).stdout
        rows = [line for line in out.splitlines() if outcome[1]["id"] in line]
        assert rows and "refused" in rows[0] and "ServerRefusal" in rows[0], out[-2000:]
    elif outcome[0] == "job" and outcome[1]["status"] == "ERROR":  # its own copy: it may also complete
        _assert_clean(outcome, (outcome[1]["error"]["type"].rsplit(".", 1)[-1],))
    hostile.check_no_trace(legit)
