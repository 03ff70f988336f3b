"""Red team: hostile requests that combine the layers (wire, verifier, rewrite, guard, module table).

Written by hand as an attacker would, served as ``remote='local'`` serves a request (LocalServer:
decode, verify, load, build, run) against a real tiny GPT-2. Each one must end in a clean, typed
error and leave no trace (the ``no_trace`` fixture: no file, no process, no import, no change to
the policy or the server's modules, and a legitimate request right after gives the right value).
Each case names the route it tries; the ones that were real escapes when this file was written
say so (``escape:``), and the fix is in the layer named there.
"""
import numpy.ma  # noqa: F401 (imported by a request below; the no-trace check flags new imports)
import pytest
import torch

from compiler.ir.errors import IRDecodeError, IRVerifyError
from compiler.ir.request import Request, encode_request
from compiler.ir.values import encode_value
from nnsight.tracing.remote import model_key
from runtime.integrity import IntegrityError
from runtime.loader import LoadError, ServerImportError, ServerRefusal

from loader_attacks import LEGIT, ir_text, payload, serve

NN = 'binding nnsight module "nnsight"'
NP = 'binding np module "numpy"'
TORCH = 'binding torch module "torch"'
F_DEF = "f = lambda: 0"
RAW = "{{'shape': (8,), 'typestr': '|u1', 'data': (id(np), False), 'version': 3}}"

# (id, bindings, body, error type, words the message must contain)
CASES = [
    # -- escape: numpy.testing.runstring exec()s a string (the module table now refuses numpy.testing)
    ("numpy.testing.runstring runs a string", NP,
     'np.testing.runstring("import pathlib; pathlib.Path(%r).touch()" % "{M}", {{}})', ServerImportError,
     ["'numpy.testing'", "attack.py:2"]),
    ("numpy.testing reached by a computed name", NP,
     'getattr(np, "test" + "ing").measure("open(%r, \'w\')" % "{M}")', ServerImportError, ["'numpy.testing'"]),
    ("import numpy.testing in code", "", "from numpy.testing import tempdir", ServerImportError,
     ["numpy.testing"]),
    # -- escape: super() found refused methods past the by-class check (the guard judges super(C, x) as x)
    ("super() reaches save_pretrained", "", "tok = model.tokenizer\nsuper(type(tok), tok).save_pretrained('{M}')",
     ServerImportError, ["save_pretrained", "attack.py:3"]),
    ("super() reaches ndarray.tofile", NP, "class A(np.ndarray):\n    pass\na = np.zeros(2).view(A)\n"
     "super(A, a).tofile('{M}')", ServerImportError, ["'numpy.ndarray.tofile'", "attack.py:5"]),
    ("super() str.format reads __globals__", "", F_DEF + '\nclass S(str):\n    pass\n'
     's = super(S, S("{{0.__globals__}}")).format(f)', ServerRefusal, ["__globals__", "attack.py:5"]),
    # -- escape: capture_locals reads the reprs of frames' locals (traceback.TracebackException refused)
    ("TracebackException captures locals", 'binding tb module "traceback"',
     "try:\n    1 / 0\nexcept Exception as e:\n    t = tb.TracebackException.from_exception(e, capture_locals=True)",
     ServerImportError, ["'traceback.TracebackException'", "attack.py:5"]),
    # -- escape: the hosted model is shared by every request (hooks, moves, modes, attribute writes)
    ("hook on a hosted layer", "", "h = model.transformer.h[0].register_forward_hook(lambda m, i, o: None)",
     ServerImportError, ["register_forward_hook", "attack.py:2"]),
    ("hook through the root model's delegation", "",
     "h = model.register_forward_pre_hook(lambda m, i: None)", ServerImportError,
     ["register_forward_pre_hook", "attack.py:2"]),
    ("half() of the hosted model", "", "model.half()", ServerImportError, ["'torch.nn.Module.half'"]),
    ("train() of the hosted model", "", "model.train()", ServerImportError, ["'torch.nn.Module.train'"]),
    ("envoy.to moves the hosted layer", "", 'model.transformer.h[0].to("meta")', ServerImportError,
     ["'nnsight.Envoy.to'", "attack.py:2"]),
    ("apply() over every layer", "", "model.apply(lambda m: None)", ServerImportError, ["'torch.nn.Module.apply'"]),
    ("half() through modules()", "", "for m in model.modules():\n    m.half()", ServerImportError,
     ["'torch.nn.Module.half'", "attack.py:3"]),
    ("replace a hosted layer's forward", "", "model.transformer.h[0].forward = lambda *a, **k: 0", ServerRefusal,
     ["NN404", "forward", "attack.py:2"]),
    ("replace a hosted submodule", "", "model.transformer.h[0].mlp = None", ServerRefusal, ["NN404", "'mlp'"]),
    ("write the hosted config", "", "model.config.n_layer = 1", ServerRefusal,
     ["NN404", "'n_layer'", "configuration"]),
    ("write the hosted config by setattr", "", 'setattr(model.config, "n_" + "layer", 1)', ServerRefusal,
     ["NN404", "'n_layer'"]),
    ("write the hosted tokenizer", "", 'model.tokenizer.padding_side = "right"', ServerRefusal,
     ["NN404", "padding_side"]),
    ("add tokens to the hosted tokenizer", "", 'n = model.tokenizer.add_tokens(["zzqq"])', ServerImportError,
     ["add_tokens"]),
    ("config.update() of the hosted model", "", 'model.config.update({{"n_layer": 1}})', ServerImportError,
     ["PretrainedConfig.update", "attack.py:2"]),
    ("object.__setattr__ on the hosted config", "", 'object.__setattr__(model.config, "n_layer", 1)',
     ServerRefusal, ["NN404", "'n_layer'"]),
    ("nn.Module.__setattr__ on a hosted layer", TORCH,
     'torch.nn.Module.__setattr__(model.transformer.h[0], "forward", print)', ServerRefusal, ["NN404", "forward"]),
    ("requires_grad off for every weight", "", "for n, p in model.named_parameters():\n    p.requires_grad = False",
     ServerRefusal, ["NN404", "requires_grad", "attack.py:3"]),
    ("requires_grad_() of a hosted weight", "", "model.transformer.wte.weight.requires_grad_(False)",
     ServerImportError, ["requires_grad_"]),
    ("the Rust tokenizer behind the hosted one", "", 'n = model.tokenizer.backend_tokenizer.add_tokens(["zzqq"])',
     ServerImportError, ["'tokenizers.Tokenizer.add_tokens'"]),
    ("write the Rust tokenizer", "", "model.tokenizer.backend_tokenizer.post_processor = None", ServerRefusal,
     ["NN404", "post_processor"]),
    ("warnings.catch_warnings entered, never exited", 'binding warnings module "warnings"',
     "warnings.catch_warnings().__enter__()", ServerImportError, ["'warnings.catch_warnings'"]),
    ("insert into the server's warning filters", 'binding warnings module "warnings"',
     'warnings.filters.insert(0, ("ignore", None, Warning, None, 0))', ServerImportError, ["'warnings.filters'"]),
    ("autograd anomaly mode for every request", TORCH, "torch.autograd.set_detect_anomaly(True)",
     ServerImportError, ["set_detect_anomaly"]),
    ("anomaly mode by its torch name", TORCH, "torch.set_anomaly_enabled(True)", ServerImportError,
     ["'torch.set_anomaly_enabled'"]),
    # -- introspection routes through server functions and computed names --------------------------
    ("reduce(getattr) to __globals__", 'binding functools module "functools"',
     F_DEF + '\ng = functools.reduce(getattr, ["__glo" + "bals__"], f)', ServerRefusal, ["__globals__", "NN403"]),
    ("map(getattr) to __code__", "", F_DEF + '\ng = list(map(getattr, [f], ["__co" + "de__"]))', ServerRefusal,
     ["__code__"]),
    ("partial(object.__getattribute__)", 'binding functools module "functools"',
     F_DEF + '\ng = functools.partial(object.__getattribute__, f)("__glob" + "als__")', ServerRefusal,
     ["__globals__"]),
    ("sorted key reads a code object", "", F_DEF + '\ns = sorted([f], key=lambda x: getattr(x, "__co" + "de__"))',
     ServerRefusal, ["__code__"]),
    ("vars(type(x)) reaches __subclasses__", "", 'x = vars(type(1))["__subclasses__"]', ServerRefusal, ["vars()"]),
    ("getattr(object, computed __subclasses__)", "", 'x = getattr(object, "__sub" + "classes__")()', ServerRefusal,
     ["__subclasses__", "NN403"]),
    ("getattr(type(x), computed mro)", "", 'x = getattr(type(1), "m" + "ro")()', ServerRefusal, ["'mro'"]),
    ("generator frame by computed name", "", 'g = (i for i in [1])\nfr = getattr(g, "gi_" + "frame")',
     ServerRefusal, ["gi_frame", "attack.py:3"]),
    ("traceback in a handler by computed name", "",
     'try:\n    1 / 0\nexcept Exception as e:\n    t = getattr(e, "__trace" + "back__")', ServerRefusal,
     ["__traceback__", "attack.py:5"]),
    ("lru_cache wrapper of a server function", 'binding functools module "functools"',
     "w = functools.lru_cache(None)(len).__wrapped__", ServerRefusal, ["__wrapped__"]),
    ("copy() runs a __reduce__ naming torch.save", TORCH + '\nbinding copy module "copy"',
     "class R:\n    def __reduce__(self):\n        return (torch.save, (1, '{M}'))\nr = copy.copy(R())",
     ServerImportError, ["'torch.save'", "attack.py:4"]),
    ("__reduce_ex__ reads the hosted model's internals", 'binding copy module "copy"',
     "class R:\n    def __reduce_ex__(self, p):\n        return (object.__getattribute__, (model, '_module'))\n"
     "r = copy.copy(R())", ServerRefusal, ["'_module'"]),
    ("__getattr__ fallback forwards to the model", "",
     "class G:\n    def __getattr__(self, n):\n        return getattr(model, n)\nm = G()._interleaver", ServerRefusal,
     ["'_interleaver'", "attack.py:4"]),
    ("__init_subclass__ writes a refused name", "",
     'class B:\n    def __init_subclass__(cls):\n        setattr(cls, "__glob" + "als__", 1)\nclass C(B):\n    pass',
     ServerRefusal, ["__globals__", "attack.py:4"]),
    ("string annotation in a dataclass", 'binding dataclasses module "dataclasses"',
     '@dataclasses.dataclass\nclass D:\n    a: "().__class__.__mro__" = 1', ServerRefusal, ["__mro__"]),
    # -- modules reached through allowed ones -------------------------------------------------------
    ("torch.nn's own torch.hub", TORCH, "h = torch.nn.modules.module.torch.hub", ServerImportError,
     ["'torch.hub'"]),
    ("os.environ through torch", TORCH, "e = torch.os.environ", ServerImportError, ["module 'os'"]),
    ("transformers' logging switches", 'binding tf module "transformers"', "tf.utils.logging.set_verbosity_debug()",
     ServerImportError, ["'transformers.utils'"]),
    ("lazy import by C code under the request's importer", TORCH, "x = torch.utils.data.DataLoader",
     ServerImportError, ["DataLoader"]),
    ("tracer internals", 'binding t tracer', "m = t._mediator", ServerRefusal, ["'_mediator'"]),
    ("envoy internals by computed name", "", 'i = getattr(model, "_inter" + "leaver")', ServerRefusal,
     ["'_interleaver'"]),
]


@pytest.mark.parametrize("name,bindings,body,error,words", CASES, ids=[c[0] for c in CASES])
def test_combined_attack_is_refused_cleanly(gpt2, no_trace, name, bindings, body, error, words):
    text = ir_text(body.format(M=no_trace.marker) + "\nout = model.transformer.h[0].output[0].save()\n", bindings)
    modes = (torch.is_grad_enabled(), torch.is_anomaly_enabled())
    with pytest.raises(error) as info:
        serve(gpt2, payload(gpt2, text))
    message = str(info.value)
    for word in words:
        assert word in message, (word, message)
    assert (torch.is_grad_enabled(), torch.is_anomaly_enabled()) == modes


def test_there_are_at_least_twenty_five_red_team_requests():
    assert len(CASES) >= 25


def test_own_nn_module_keeps_its_methods(gpt2, no_trace):
    """The hosted model's layers are read-only; a request's own nn.Module subclass is not."""
    definitions = '''
        definition 0 "Probe" module="lib" at "lib.py":1:0
          global torch module "torch"
          | class Probe(torch.nn.Module):
          |     def __init__(self):
          |         super().__init__()
          |         self.lin = torch.nn.Linear(768, 1)
        '''
    body = ("p = Probe()\np.eval()\np = p.to(torch.float32)\np.scale = 2\n"
            "out = nnsight.save(p.scale + int(p.training))\n")
    text = ir_text(body, "binding Probe class 0\n" + TORCH + "\n" + NN, definitions, assigned=["p", "out"])
    assert serve(gpt2, payload(gpt2, text))["out"] == 2


def test_grad_mode_left_on_is_restored(gpt2, no_trace):
    """``torch.set_grad_enabled(True)`` called (not entered) flips a per-thread switch: the server
    puts it back after the request."""
    before = torch.is_grad_enabled()
    with torch.no_grad():
        text = ir_text("torch.set_grad_enabled(True)\nout = nnsight.save(1)\n", TORCH + "\n" + NN)
        assert serve(gpt2, payload(gpt2, text))["out"] == 1
        assert torch.is_grad_enabled() is False
    assert torch.is_grad_enabled() == before


@pytest.mark.parametrize("module", ["compiler.policy", "runtime.loader", "torch", "numpy.testing"])
def test_by_value_module_cannot_shadow_a_server_module(gpt2, no_trace, module):
    text = ir_text("out = h()\n", "binding h function 0", '''
        definition 0 "h" module="%s" at "lib.py":1:0
          | def h():
          |     return 1
        ''' % module)
    with pytest.raises(LoadError, match="belongs to the server"):
        serve(gpt2, payload(gpt2, text))


def test_closure_cell_named_builtins_is_refused(gpt2, no_trace):
    text = ir_text("out = h()\n", "binding h function 0", '''
        definition 0 "make.h" kind=local module="lib" at "lib.py":2:4
          cell __builtins__ module "builtins"
          | def h():
          |     return 1
        ''')
    with pytest.raises(IRVerifyError, match="__builtins__"):
        serve(gpt2, payload(gpt2, text))


def test_unit_position_does_not_change_what_is_refused(gpt2, no_trace):
    """A unit whose recorded position is far from its source's lines: still refused, at its own file."""
    text = ir_text(F_DEF + "\ng = f.__globals__\nout = 1\n").replace('"attack.py":2:4', '"attack.py":90000:4')
    with pytest.raises(ServerRefusal) as info:
        serve(gpt2, payload(gpt2, text))
    assert "__globals__" in str(info.value) and "attack.py:" in str(info.value)


def test_decode_time_refusal_names_the_binding_not_the_decoder(gpt2, no_trace):
    """A value binding naming a refused entry: refused while decoding, and the message names the
    binding instead of pointing at the toolchain's own files."""
    text = ir_text("out = 1\n", 'binding cfg value ["objref", "torch:save"]')
    with pytest.raises(IRDecodeError) as info:
        serve(gpt2, payload(gpt2, text))
    message = str(info.value)
    assert message.startswith("binding 'cfg': ") and "'torch.save'" in message
    assert ".py:" not in message


def test_call_arguments_cannot_name_a_server_class(gpt2, no_trace):
    """The traced call's arguments are value trees too: a server class named there is not rebuilt."""
    from compiler.ir import parse_program

    program = parse_program(ir_text("out = 1\n"))
    args = ["tuple", ["object", "logging:Logger", [["name", "x"]], []]]
    data = encode_request(Request(program, model_key(gpt2), "trace", args, encode_value({})))
    from nnsight.tracing.remote import LocalServer

    server = LocalServer()
    server.host(model_key(gpt2), gpt2)
    with pytest.raises(IRDecodeError, match="neither defined by value"):
        server.handle(data)


# -- aliases of the hosted model's memory that autograd's version counter does not see -------------------
# A write through one would change the weights unseen by the integrity check, so the loader refuses them
# by storage (runtime/loader/hosted_memory.py): each must be refused AND leave every weight as it was.

W = "w = model.transformer.h[0].mlp.c_fc.weight\n"
COPY = 'binding copy module "copy"'
LIAR = ("class T(torch.Tensor):\n    @classmethod\n    def __torch_function__(cls, f, types, args=(), kwargs=None):\n"
        "        if getattr(f, '__name__', '') == 'untyped_storage':\n"
        "            return torch.zeros(1).untyped_storage()\n"
        "        return super().__torch_function__(f, types, args, kwargs or {{}})\n")
ALIAS_CASES = [
    (".data of a weight", "", W + "w.data.zero_()"),
    (".data by a computed name", "", W + 'getattr(w, "da" + "ta").zero_()'),
    (".data through object.__getattribute__", "", W + 'object.__getattribute__(w, "data").zero_()'),
    (".data of a view", "", W + "w.view(-1).data.zero_()"),
    (".data of a detached weight", "", W + "w.detach().data.zero_()"),
    (".data of the tied lm_head weight", "", "model.lm_head.weight.data.zero_()"),
    (".data of every parameter", "", "for n, p in model.named_parameters():\n    p.data.zero_()"),
    ("the data descriptor of torch.Tensor", TORCH, W + "torch.Tensor.data.__get__(w).zero_()"),
    (".data assigned a weight", TORCH, W + "x = torch.empty(0)\nx.data = w.detach()\nx.zero_()"),
    (".data assigned by object.__setattr__", TORCH,
     W + "x = torch.empty(0)\nobject.__setattr__(x, 'data', w.detach())\nx.zero_()"),
    (".numpy() of a detached weight", "", W + "a = w.detach().numpy()\na[:] = 0"),
    (".numpy() of a row", "", W + "w[0].numpy()[:] = 0"),
    (".numpy(force=True)", "", W + "w.numpy(force=True)[:] = 0"),
    ("__array__() of a weight", "", W + "w.detach().__array__()[:] = 0"),
    ("Tensor.numpy through the class", TORCH, W + "torch.Tensor.numpy(w.detach())[:] = 0"),
    ("np.asarray of a detached weight", NP, W + "np.asarray(w.detach())[:] = 0"),
    ("np.array without a copy", NP, W + "np.array(w.detach(), copy=False)[:] = 0"),
    ("np.ravel keeps the memory", NP, W + "np.ravel(w.detach())[:] = 0"),
    ("np.copyto into an alias", NP, W + "np.copyto(np.asarray(w.detach()), 0.0)"),
    ("np.nditer over a list of weights", NP, W + "it = np.nditer([w.detach()], op_flags=[['readwrite']])"),
    ("ufunc.at writes in place", NP, W + "np.add.at(w.detach(), [0], 1.0)"),
    ("a frompyfunc ufunc's at", NP, W + "u = np.frompyfunc(lambda x: 0.0, 1, 1)\nu.at(w.detach(), [0])"),
    ("np.ma.array without a copy", NP, W + "m = np.ma.array(w.detach(), copy=False)\nm[:] = 0"),
    ("the raw ufunc behind np.ma.add", NP, W + "np.ma.add.f.at(w.detach(), [0], 1.0)"),
    ("np.matrix behind np.r_", NP, W + "m = np.r_.makemat(w.detach(), copy=False)\nm[:] = 0"),
    ("np.from_dlpack", NP, W + "np.from_dlpack(w.detach())[:] = 0"),
    ("torch.from_dlpack", TORCH, W + "torch.from_dlpack(w.detach()).zero_()"),
    ("a DLPack capsule", TORCH, W + "c = torch.utils.dlpack.to_dlpack(w.detach())\ntorch.from_dlpack(c).zero_()"),
    ("the untyped storage", "", W + "w.untyped_storage().fill_(0)"),
    ("the typed storage of a row", "", W + "w[0].storage().fill_(0)"),
    ("set_() over the weight", TORCH, W + "x = torch.empty(0)\nx.set_(w.detach())\nx.zero_()"),
    ("set_() by keyword", TORCH, W + "x = torch.empty(0)\nx.set_(source=w)\nx.zero_()"),
    ("share_memory_()", "", W + "w.detach().share_memory_()"),
    ("copy.copy shares the storage", COPY, W + "copy.copy(w.detach()).zero_()"),
    ("Parameter(w).data", TORCH, W + "torch.nn.Parameter(w.detach()).data.zero_()"),
    ("a subclass whose __torch_function__ lies about the storage", TORCH,
     W + LIAR + "x = w.detach().as_subclass(T)\nx.numpy()[:] = 0"),
    ("super().numpy() in a subclass", TORCH,
     W + "class T(torch.Tensor):\n    def n(self):\n        return super().numpy()\nw.detach().as_subclass(T).n()[:] = 0"),
]


@pytest.mark.parametrize("name,bindings,body", ALIAS_CASES, ids=[c[0] for c in ALIAS_CASES])
def test_alias_of_hosted_memory_is_refused(gpt2, no_trace, name, bindings, body):
    weights = {n: t.detach().clone() for n, t in gpt2.state_dict().items()}  # (the fixture loaded the model)
    text = ir_text(body + "\nout = model.transformer.h[0].output[0].save()\n", bindings)
    with pytest.raises(ServerRefusal) as info:
        serve(gpt2, payload(gpt2, text))
    message = str(info.value)
    assert "NN404" in message and "hosted model" in message and "attack.py:" in message, message
    assert "clone()" in message, message  # says how to do it instead
    changed = [n for n, t in gpt2.state_dict().items() if not torch.equal(t, weights[n])]
    assert not changed, "the request changed the hosted weights: %s" % changed


LEGIT_NUMPY = [
    ("numpy of an activation", "x = model.transformer.h[0].output[0]\na = x.detach().numpy()\na[:] = 0\nx.data.zero_()"),
    ("numpy functions on activations", "x = model.transformer.h[0].output[0].detach()\nm = float(np.mean(np.asarray(x)))"),
    ("numpy of a copy of a weight", "a = model.transformer.h[0].mlp.c_fc.weight.detach().clone().numpy()\na[:] = 0"),
    ("a checked numpy class keeps its refusals", "try:\n    np.matrix([[1.0]]).tofile\nexcept ImportError:\n"
     "    pass\nelse:\n    raise AssertionError('tofile')\ntry:\n    np.matrix.tofile\nexcept ImportError:\n    pass\n"
     "else:\n    raise AssertionError('matrix.tofile')"),
    ("numpy classes still answer isinstance", "m = np.matrix([[1.0]])\nassert isinstance(m, np.matrix)\n"
     "assert isinstance(np.add, np.ufunc)\nclass M(np.matrix):\n    pass\nassert issubclass(M, np.matrix)"),
    ("torch functions read weights", "w = model.transformer.h[0].mlp.c_fc.weight\nn = float((w.detach() * 2).sum())"),
]


# A numpy class reached without an attribute read (type(instance), __class__, dtype.type) is the real one,
# which the guard's wrapping of numpy callables never sees: a scalar type returns an array over its
# argument's memory when that already has its dtype, and np.matrix keeps its input without a copy. The
# tensor side's mode (runtime/loader/tensor_side.py) refuses the conversion itself (Tensor.__array__),
# however the class was reached, and whoever runs it: a request's own torch function mode's handler runs
# while the model runs, with the server's mode kept under it; a function of the request that the model's
# forward calls (a tensor subclass's __torch_function__) switches the mode on as it starts.
REQUEST_MODE = ("class Q(torch.overrides.TorchFunctionMode):\n    def __torch_function__(self, f, ty, a=(), k=None):\n"
                "        F(t)[:] = 0\n        return f(*a, **(k or {}))\n")
NP_TORCH = NP + "\n" + TORCH
CLASS_ROUTES = [
    ("type() of a numpy scalar", NP, W + "type(np.float32(1.0))(w.detach())[:] = 0"),
    ("type() of a numpy matrix", NP, W + "type(np.matrix([[1.0]]))(w.detach(), copy=False)[:] = 0"),
    ("np.float32 read from the module", NP, W + "np.float32(w.detach())[:] = 0"),
    ("__class__ of a numpy scalar", NP, W + "np.float32(1.0).__class__(w.detach())[:] = 0"),
    ("dtype.type of an array", NP, W + "np.zeros(1, np.float32).dtype.type(w.detach())[:] = 0"),
    ("a class from type() in a helper function", NP,
     W + "def f(c, x):\n    return c(x)\nf(type(np.float32(1.0)), w.detach())[:] = 0"),
    ("a request mode's handler, while the model runs", NP_TORCH,
     W + "t = w.detach()\nF = type(np.float32(1.0))\n" + REQUEST_MODE
     + "with Q():\n    x = model.transformer.h[0].output[0]\n    y = x + 1"),
    ("a tensor subclass swapped into the forward", NP_TORCH,
     W + "t = w.detach()\nF = type(np.float32(1.0))\nclass T(torch.Tensor):\n    @classmethod\n"
     "    def __torch_function__(cls, f, ty, a=(), k=None):\n        if len(a) > 1:\n            F(t)[:] = 0\n"
     "        return super().__torch_function__(f, ty, a, k or {})\n"
     "o = model.transformer.h[0].output\nmodel.transformer.h[0].output = o.as_subclass(T)"),
    ("a lambda the forward calls", NP_TORCH,
     W + "t = w.detach()\nF = type(np.float32(1.0))\nclass T(torch.Tensor):\n"
     "    __torch_function__ = classmethod(lambda cls, f, ty, a=(), k=None: (len(a) > 1 and F(t).fill(0), "
     "torch.Tensor.__torch_function__(f, ty, a, k or {}))[1])\n"
     "o = model.transformer.h[0].output\nmodel.transformer.h[0].output = o.as_subclass(T)"),
]
# Taking the mode off torch's stack: every public way to pop what was not pushed is refused.
POP_ROUTES = [
    ("torch.device's __exit__", TORCH, "torch.device('cpu').__exit__(None, None, None)", ServerImportError),
    ("TorchFunctionMode's __exit__", TORCH, "torch.overrides.TorchFunctionMode().__exit__(None, None, None)",
     ServerImportError),
    ("a mode whose __enter__ does not push", TORCH, "class P(torch.overrides.TorchFunctionMode):\n"
     "    def __enter__(self):\n        return self\nwith P():\n    pass", ServerRefusal),
    ("ExitStack.push of a device", TORCH + '\nbinding contextlib module "contextlib"',
     "s = contextlib.ExitStack()\ns.push(torch.device('cpu'))\ns.close()", ServerImportError),
]
LEGIT_MODES = [
    ("a request mode across a module's output", NP_TORCH, "class M(torch.overrides.TorchFunctionMode):\n"
     "    def __torch_function__(self, f, ty, a=(), k=None):\n        return f(*a, **(k or {}))\n"
     "with M():\n    x = model.transformer.h[0].output[0]\n    n = float(x.detach().sum())"),
    ("a device context", NP_TORCH, "with torch.device('cpu'):\n    z = torch.zeros(2)\n"
     "x = model.transformer.h[0].output[0]\nn = float(x.detach().numpy().sum())"),
    ("a numpy class from type() on an activation", NP_TORCH,
     "x = model.transformer.h[0].output[0]\nn = float(type(np.float32(1.0))(x.detach()).sum())"),
    ("subclassing numpy classes", NP_TORCH, "class A(np.ndarray):\n    pass\na = np.zeros(3).view(A)\n"
     "assert isinstance(a, np.ndarray) and isinstance(np.float32(1.0), np.floating)\nn = float(np.sum(a))"),
    ("a tensor subclass", NP_TORCH, "class T(torch.Tensor):\n    pass\n"
     "x = model.transformer.h[0].output[0].detach().as_subclass(T)\nn = float(np.asarray(x.clone()).sum())"),
]


@pytest.mark.parametrize("name,bindings,body", CLASS_ROUTES, ids=[c[0] for c in CLASS_ROUTES])
def test_alias_through_a_numpy_class_from_type_is_refused(gpt2, no_trace, name, bindings, body):
    weights = {n: t.detach().clone() for n, t in gpt2.state_dict().items()}
    stack = torch._C._len_torch_function_stack()
    text = ir_text(body + "\nout = 1\n", bindings)
    with pytest.raises(ServerRefusal) as info:
        serve(gpt2, payload(gpt2, text))
    message = str(info.value)
    assert "NN404" in message and "hosted model" in message and "attack.py:" in message, message
    changed = [n for n, t in gpt2.state_dict().items() if not torch.equal(t, weights[n])]
    assert not changed, "the request changed the hosted weights: %s" % changed
    assert torch._C._len_torch_function_stack() == stack  # the mode is off again (and the request's own)


@pytest.mark.parametrize("name,bindings,body,error", POP_ROUTES, ids=[c[0] for c in POP_ROUTES])
def test_the_tensor_side_mode_cannot_be_popped(gpt2, no_trace, name, bindings, body, error):
    """Each route, then a write through a numpy class from type(): refused at the route, nothing written."""
    weights = {n: t.detach().clone() for n, t in gpt2.state_dict().items()}
    stack = torch._C._len_torch_function_stack()
    text = ir_text(W + "t = w.detach()\nF = type(np.float32(1.0))\n" + body + "\nF(t)[:] = 0\nout = 1\n", NP + "\n" + bindings)
    with pytest.raises(error) as info:
        serve(gpt2, payload(gpt2, text))
    assert "attack.py:" in str(info.value), info.value
    changed = [n for n, t in gpt2.state_dict().items() if not torch.equal(t, weights[n])]
    assert not changed, "the request changed the hosted weights: %s" % changed
    assert torch._C._len_torch_function_stack() == stack


@pytest.mark.parametrize("name,bindings,body", LEGIT_MODES, ids=[c[0] for c in LEGIT_MODES])
def test_modes_devices_and_numpy_classes_still_work(gpt2, no_trace, name, bindings, body):
    text = ir_text(body + "\nout = nnsight.save(n)\n", bindings + "\n" + NN, assigned=["out", "n"])
    assert isinstance(serve(gpt2, payload(gpt2, text))["out"], float)
    assert torch._C._len_torch_function_stack() == 0


@pytest.mark.parametrize("name,body", LEGIT_NUMPY, ids=[c[0] for c in LEGIT_NUMPY])
def test_numpy_and_data_on_own_memory_still_work(gpt2, no_trace, name, body):
    text = ir_text(body + "\nout = model.transformer.h[0].output[0].sum().save()\n", NP)
    result = serve(gpt2, payload(gpt2, text))
    assert torch.is_tensor(result["out"])


# -- what this layer does not close in-process (docs/security.md says so) -------------------------------

@pytest.mark.parametrize("factor", [1.0, 2.0])
def test_weights_cannot_be_changed_in_place(gpt2, factor):  # x1 keeps the values, x2 changes them
    weight = gpt2.transformer.h[0].mlp.c_fc.weight
    text = ir_text("w = model.transformer.h[0].mlp.c_fc.weight\nwith torch.no_grad():\n    w.mul_(%r)\nout = 1\n"
                   % factor, TORCH)
    serve(gpt2, payload(gpt2, LEGIT))  # the model is loaded (remote='local' loads it at the first trace)
    weight = gpt2.transformer.h[0].mlp.c_fc.weight
    before = weight.detach().clone()
    try:
        serve(gpt2, payload(gpt2, text))
    except (ServerRefusal, ServerImportError):
        return  # refused before it ran: what the test asks for
    except IntegrityError as error:  # ran, was caught after the job, and undone
        assert "transformer.h.0.mlp.c_fc.weight" in str(error) and "written in place" in str(error)
        assert error.restored
    else:
        raise AssertionError("the request changed the hosted weights in place and succeeded")
    assert torch.equal(gpt2.transformer.h[0].mlp.c_fc.weight, before), "the weights were not restored"


# Objects that carry numpy's __array_interface__ (a raw memory address) without naming it in code. A class
# the request makes is refused if its MRO or its metaclass's defines a native memory protocol, however the
# key was computed (runtime/loader/native_protocols.py); any other carrier is refused as an argument of a
# numpy callable. Each would read 8 bytes of the server's memory (at id(np)); nothing may come back.
R = "R = %s\n" % RAW.replace("{{", "{").replace("}}", "}")
NS = 'binding types module "types"'
CARRIERS = [
    ("a metaclass adds the key under a computed name", "class M(type):\n    def __new__(m, n, b, d):\n"
     "        d['__array_' + 'interface__'] = R\n        return super().__new__(m, n, b, d)\n"
     "class X(metaclass=M):\n    pass\nx = X()"),
    ("a __prepare__ mapping renames a key", "class D(dict):\n    def __setitem__(self, k, v):\n"
     "        dict.__setitem__(self, '__array_' + 'interface__' if k == 'a' else k, v)\n"
     "class M(type):\n    @classmethod\n    def __prepare__(m, n, b):\n        return D()\n"
     "class X(metaclass=M):\n    a = R\nx = X()"),
    ("a base class made by type.__new__", "B = type.__new__(type, 'B', (), {'__array_' + 'interface__': R})\n"
     "class X(B):\n    pass\nx = X()"),
    ("a class made by type.__new__", "X = type.__new__(type, 'X', (), {'__array_' + 'interface__': R})\nx = X()"),
    ("an instance's __dict__ through vars()", "class X:\n    pass\nx = X()\nvars(x)['__array_' + 'interface__'] = R"),
    ("a function's attributes through vars()", "def x():\n    pass\nvars(x)['__array_' + 'interface__'] = R"),
    ("types.SimpleNamespace with a computed key", "x = types.SimpleNamespace(**{'__array_' + 'interface__': R})"),
    ("a __getattr__ that answers it", "class X:\n    def __getattr__(self, n):\n"
     "        if n.endswith('interface__'):\n            return R\n        raise AttributeError(n)\nx = X()"),
    ("a carrier in a list", "x = [types.SimpleNamespace(**{'__array_' + 'interface__': R})]"),
]


@pytest.mark.parametrize("name,body", CARRIERS, ids=[c[0] for c in CARRIERS])
def test_array_interface_carriers_are_refused(gpt2, no_trace, name, body):
    text = ir_text(R + body + "\nr = nnsight.save(bytes(np.asarray(x)))\nout = 1\n", "\n".join((NP, NN, NS)),
                   assigned=["out", "r"])
    with pytest.raises(ServerRefusal) as info:  # (refused: nothing is read back)
        serve(gpt2, payload(gpt2, text))
    message = str(info.value)
    assert "NN402" in message and "__array_interface__" in message and "attack.py:" in message, message


LEGIT_CLASSES = [
    ("a metaclass that adds ordinary names", "class M(type):\n    def __new__(m, n, b, d):\n"
     "        d['sc' + 'ale'] = 2\n        return super().__new__(m, n, b, d)\nclass X(metaclass=M):\n    pass\n"
     "n = X.scale + float(np.asarray([X.scale]).sum())"),
    ("objects with __getattr__ and attribute dicts given to numpy", "class X:\n    def __getattr__(self, n):\n"
     "        raise AttributeError(n)\nclass Y:\n    pass\nx = Y()\nx.a = 1\nvars(x)['b'] = 2\n"
     "n = float(np.sum([x.a, x.b])) + float(len(np.asarray([X()], dtype=object)))"),
]


@pytest.mark.parametrize("name,body", LEGIT_CLASSES, ids=[c[0] for c in LEGIT_CLASSES])
def test_own_classes_and_objects_still_reach_numpy(gpt2, no_trace, name, body):
    text = ir_text(body + "\nout = nnsight.save(n)\n", "\n".join((NP, NN, NS)), assigned=["out", "n"])
    assert serve(gpt2, payload(gpt2, text))["out"] == 4.0


# However a job ends, the tensor side's mode is off afterwards (torch's mode stack is per thread, and a
# mode left on would slow every later job of the thread, or fail it at the integrity check).
ENDINGS = [
    ("an intervention that raises", "x = model.transformer.h[0].output[0]\nraise ValueError('mine')", ValueError),
    ("out of order", "x = model.transformer.h[1].output[0]\ny = model.transformer.h[0].output[0]", Exception),
    ("a request mode left on", "class M(torch.overrides.TorchFunctionMode):\n    pass\nM().__enter__()\n"
     "x = model.transformer.h[0].output[0]", IntegrityError),
    ("stopped early", "x = model.transformer.h[0].output[0]\nt.stop()", None),
]


@pytest.mark.parametrize("name,body,error", ENDINGS, ids=[c[0] for c in ENDINGS])
def test_the_mode_is_off_after_every_ending(gpt2, no_trace, name, body, error):
    stack = torch._C._len_torch_function_stack()
    text = ir_text(body + "\nout = 1\n", TORCH + "\nbinding t tracer")
    if error is None:
        serve(gpt2, payload(gpt2, text))
    else:
        with pytest.raises(error):
            serve(gpt2, payload(gpt2, text))
    assert torch._C._len_torch_function_stack() == stack


def test_request_code_switches_the_tensor_side_on_wherever_it_starts_or_resumes():
    """The rewrite's prologue: server code (the model's forward) may be what runs a request's function,
    lambda, generator or coroutine, so each switches the check on where it starts or resumes."""
    import ast

    from runtime.loader.rewrite import REQUEST, RESUMED, guard_tree

    source = ("def f(x):\n    'doc'\n    return x\ng = lambda x: x\ndef gen():\n    y = yield 1\n"
              "async def co(a):\n    return await a\ne = (i for i in range(3) if i for j in range(i))\n")
    tree = guard_tree(ast.parse(source), "attack.py")
    code = ast.unparse(tree)
    f = tree.body[0]
    assert ast.get_docstring(f) == "doc" and REQUEST in ast.unparse(f.body[1])  # (after the docstring)
    assert code.count(REQUEST) == 3 + 1 + 3  # f, gen, co; the lambda; the generator expression's 3 parts
    assert code.count(RESUMED) == 2  # after the yield and after the await
    namespace = {REQUEST: lambda: calls.append(1), RESUMED: lambda v: v, "range": range}
    calls = []
    exec(compile(tree, "attack.py", "exec"), namespace)
    assert namespace["f"](2) == 2 and namespace["g"](3) == 3 and list(namespace["e"]) == [1, 2, 2] and len(calls) == 2 + 8
