"""Hostile requests against the loader, written by hand as an attacker would (IR text, not our client).

Each one is served exactly as ``remote='local'`` serves a request (LocalServer: decode, verify, load,
build, run) against a real tiny GPT-2. Each must end in a clean, typed error that names the thing and,
for code, the user's line -- and leave no trace (the ``no_trace`` fixture: no file, no process, no
import, no change to the policy or the server's modules, and a legitimate request right after still
gives the right value).
"""
import pytest

from compiler.ir.errors import IRVerifyError
from runtime.loader import LoadError, ServerImportError, ServerRefusal

from loader_attacks import ir_text, payload, serve

TORCH = 'binding torch module "torch"'
NP = 'binding np module "numpy"'
LOGGING = 'binding logging module "logging"'
F_DEF = "f = lambda: 0"

# (id, bindings, body, error type, words the message must contain)
CASES = [
    # -- allowed modules lead to refused ones ------------------------------------------------------
    ("torch.os", TORCH, 'torch.os.system("touch {M}")', ServerImportError, ["module 'os'", "attack.py:2"]),
    ("logging.sys", LOGGING, "out = logging.sys.modules", ServerImportError, ["module 'sys'", "attack.py:2"]),
    ("logging.threading", LOGGING, "t = logging.threading.Thread(target=print)", ServerImportError,
     ["module 'threading'", "attack.py:2"]),
    ("typing.sys", 'binding typing module "typing"', 'typing.sys.modules["os"].system("touch {M}")',
     ServerImportError, ["module 'sys'"]),
    ("warnings.sys", 'binding warnings module "warnings"', "w = warnings.sys", ServerImportError,
     ["module 'sys'"]),
    ("runtime.loader.importlib", 'binding rt module "runtime"',
     'rt.loader.importlib.import_module("os").system("touch {M}")', ServerImportError, ["'runtime.loader'"]),
    ("runtime.loader binding", 'binding rl module "runtime.loader"', "x = rl", ServerImportError,
     ["'runtime.loader'"]),
    ("getattr builds os", TORCH, 'getattr(torch, "o" + "s").system("touch {M}")', ServerImportError,
     ["module 'os'", "attack.py:2"]),
    ("object ref logging:sys", 'binding s object "logging:sys"', "x = s", ServerImportError, ["module 'sys'"]),
    ("importlib binding", 'binding imp module "importlib"', 'imp.import_module("os")', ServerImportError,
     ["module 'importlib'"]),
    ("import inside code", "", 'import torch.utils.cpp_extension as c', ServerImportError,
     ["torch.utils.cpp_extension"]),
    ("from torch import save", "", "from torch import save\nsave(1, '{M}')", ServerImportError,
     ["'torch.save'", "attack.py:2"]),
    ("sympy evaluates strings", 'binding sp module "sympy"', 'sp.parse_expr("1")', ServerImportError,
     ["module 'sympy'"]),
    # -- introspection ---------------------------------------------------------------------------
    ("subclasses chain", "", "x = ().__class__.__mro__[1].__subclasses__()", ServerRefusal,
     ["__mro__", "attack.py:2", "NN402"]),
    ("dynamic subclasses", "", 'c = getattr((), "__cla" + "ss__")\nm = getattr(c, "__mr" + "o__")', ServerRefusal,
     ["__mro__", "attack.py:3", "NN403"]),
    ("function globals", "", F_DEF + "\ng = f.__globals__", ServerRefusal, ["__globals__", "attack.py:3"]),
    ("lambda code", "", "c = (lambda: 0).__code__", ServerRefusal, ["__code__", "attack.py:2"]),
    ("traceback frame", "",
     "try:\n    1 / 0\nexcept Exception as e:\n    fr = e.__traceback__.tb_frame.f_back", ServerRefusal,
     ["attack.py:5"]),
    ("generator frame", "", "g = (i for i in range(3))\nfr = g.gi_frame", ServerRefusal,
     ["gi_frame", "attack.py:3"]),
    ("type.__subclasses__", "", "x = type.__subclasses__(object)", ServerRefusal, ["__subclasses__"]),
    ("mro method", "", "x = int.mro()", ServerRefusal, ["'mro'", "attack.py:2"]),
    ("format traversal", "", F_DEF + '\ns = "{{0.__globals__}}".format(f)', ServerRefusal,
     ["__globals__", "attack.py:3"]),
    ("str.format unbound", "", F_DEF + '\ns = str.format("{{0.__init__.__globals__[x]}}", f)', ServerRefusal,
     ["__init__", "attack.py:3"]),
    ("format_map traversal", "", F_DEF + '\ns = "{{f.__globals__}}".format_map({{"f": f}})', ServerRefusal,
     ["__globals__"]),
    ("__builtins__ name", "", 'o = __builtins__["open"]', ServerRefusal, ["__builtins__", "attack.py:2"]),
    ("__import__ name", "", 'os = __import__("os")', ServerRefusal, ["__import__", "attack.py:2"]),
    ("object.__getattribute__", "", F_DEF + '\ng = object.__getattribute__(f, "__glob" + "als__")',
     ServerRefusal, ["__globals__", "attack.py:3"]),
    ("attrgetter", 'binding operator module "operator"', F_DEF + '\ng = operator.attrgetter("__globals__")(f)',
     ServerImportError, ["'operator.attrgetter'", "attack.py:3"]),
    ("types.FunctionType", 'binding types module "types"', "F = types.FunctionType", ServerImportError,
     ["'types.FunctionType'"]),
    ("type with three arguments", "", 'X = type("X", (), {{}})', ServerRefusal, ["type()", "attack.py:2"]),
    ("class pattern", "", F_DEF + "\nmatch f:\n    case object(__globals__=g):\n        pass", ServerRefusal,
     ["__globals__", "attack.py:4"]),
    ("string annotation", "", 'def h(x: "().__class__.__mro__"):\n    pass', ServerRefusal,
     ["__mro__", "attack.py:2"]),
    ("vars of a server module", TORCH, "d = vars(torch)", ServerRefusal, ["vars()", "attack.py:2"]),
    ("builtins module reaches real builtins", 'binding b module "builtins"', 'b.open("{M}", "w")', ServerRefusal,
     ["open()"]),
    ("builtins getattr", 'binding b module "builtins"', F_DEF + '\ng = b.getattr(f, "__globals__")',
     ServerRefusal, ["__globals__", "attack.py:3"]),
    ("globals dict", "", 'b = globals()["__builtins__"]', KeyError, ["__builtins__"]),
    ("hosted model internals", "", "m = model._module", ServerRefusal, ["_module", "attack.py:2"]),
    ("torch._C", TORCH, "c = torch._C", ServerRefusal, ["_C", "attack.py:2"]),
    ("super bypass of a server object", "", 'x = object.__getattribute__(model, "_module")', ServerRefusal,
     ["_module", "attack.py:2"]),
    # -- file, native-library, pickle and process entry points of allowed modules ----------------------
    ("torch.save", TORCH, 'torch.save(torch.ones(2), "{M}")', ServerImportError, ["'torch.save'", "attack.py:2"]),
    ("torch.load", TORCH, 'x = torch.load("{M}", weights_only=False)', ServerImportError, ["'torch.load'"]),
    ("torch.from_file", TORCH, 'x = torch.from_file("{M}")', ServerImportError, ["'torch.from_file'"]),
    ("torch.ops.load_library", TORCH, 'torch.ops.load_library("{M}.so")', ServerImportError,
     ["'torch.ops.load_library'"]),
    ("torch.hub", TORCH, 'torch.hub.load("x", "y")', ServerImportError, ["'torch.hub'"]),
    ("torch.serialization alias", TORCH, 'torch.serialization.save(1, "{M}")', ServerImportError,
     ["'torch.serialization'"]),
    ("storage from_file", TORCH, 'x = torch.UntypedStorage.from_file("{M}", False, 1)', ServerImportError,
     ["from_file"]),
    ("global module hook", TORCH, "h = torch.nn.modules.module.register_module_forward_hook(print)",
     ServerImportError, ["register_module_forward_hook"]),
    ("numpy.save", NP, 'np.save("{M}", np.zeros(2))', ServerImportError, ["'numpy.save'"]),
    ("numpy.load", NP, 'x = np.load("{M}", allow_pickle=True)', ServerImportError, ["'numpy.load'"]),
    ("numpy.memmap", NP, 'x = np.memmap("{M}", mode="w+", shape=(2,))', ServerImportError, ["'numpy.memmap'"]),
    ("numpy.fromfile", NP, 'x = np.fromfile("{M}")', ServerImportError, ["'numpy.fromfile'"]),
    ("ndarray.tofile", NP, 'np.zeros(2).tofile("{M}")', ServerImportError, ["'numpy.ndarray.tofile'"]),
    ("ndarray.dump", NP, 'np.zeros(2).dump("{M}")', ServerImportError, ["'numpy.ndarray.dump'"]),
    ("numpy.ctypeslib", NP, 'np.ctypeslib.load_library("x", "{M}")', ServerImportError, ["numpy.ctypeslib"]),
    ("logging.FileHandler", LOGGING, 'h = logging.FileHandler("{M}")', ServerImportError,
     ["'logging.FileHandler'"]),
    ("logging.config", LOGGING, "logging.config.dictConfig({{}})", ServerImportError, ["'logging.config'"]),
    ("logger handlers", LOGGING, 'logging.getLogger("x").addHandler(None)', ServerImportError,
     ["addHandler"]),
    ("transformers file utilities", 'binding tf module "transformers"', 'p = tf.utils.cached_file("gpt2", "x")',
     ServerImportError, ["'transformers.utils'"]),
    ("transformers loads files", 'binding tf module "transformers"', 'm = tf.AutoModel.from_pretrained("{M}")',
     ServerImportError, ["'transformers.AutoModel'"]),
    ("tokenizer writes files", "", 'model.tokenizer.save_pretrained("{M}")', ServerImportError,
     ["save_pretrained"]),
    # -- shared state is read-only ---------------------------------------------------------------------
    ("assign torch attribute", TORCH, "torch.foo = 1", ServerRefusal, ["torch.foo", "NN404"]),
    ("assign math.pi", 'binding math module "math"', "math.pi = 3", ServerRefusal, ["math.pi"]),
    ("setattr on torch", TORCH, 'setattr(torch, "save", print)', ServerRefusal, ["torch.save"]),
    ("delete torch.nn", TORCH, "del torch.nn", ServerRefusal, ["torch.nn"]),
    ("monkeypatch a server class", TORCH, "torch.Tensor.add = print", ServerRefusal, ["Tensor.add", "attack.py:2"]),
    ("attribute of a server function", TORCH, "torch.nn.functional.relu.x = 1", ServerRefusal,
     ["attack.py:2"]),
    ("object.__setattr__ on a module", TORCH, 'object.__setattr__(torch.nn, "Linear", None)', ServerRefusal,
     ["torch.nn"]),
    ("policy binding", 'binding pol module "compiler.policy"', "pol.DANGEROUS_MODULES = {{}}", ServerImportError,
     ["'compiler.policy'"]),
    ("policy through compiler", 'binding c module "compiler"', "c.policy.register('os')", ServerImportError,
     ["'compiler.policy'", "attack.py:2"]),
    ("nnsight.register", 'binding nn module "nnsight"', "nn.register('mylib')", ServerImportError,
     ["'nnsight.register'"]),
    ("default dtype", TORCH, "torch.set_default_dtype(torch.float64)", ServerImportError,
     ["'torch.set_default_dtype'"]),
    ("module view internals", TORCH, "m = type(torch)._view_module", ServerRefusal, ["_view_module"]),
    ("match capture shadows a guard", "", "match 1:\n    case __nnsight_attr__:\n        pass", ServerRefusal,
     ["__nnsight_attr__", "attack.py:3"]),
    ("numpy reads memory", NP, "a = np.lib.stride_tricks.as_strided(np.zeros(1), shape=(9,), strides=(8,))",
     ServerImportError, ["as_strided"]),
    ("real builtin through a server module", TORCH, 'f = torch.builtins.open("{M}", "w")', ServerRefusal,
     ["open()"]),
    ("real eval through a server module", TORCH, 'x = torch.builtins.eval("1")', ServerRefusal, ["eval()"]),
    ("real getattr through a server module", TORCH, 'c = torch.builtins.getattr(torch, "_C")', ServerRefusal,
     ["'_C'", "NN402", "attack.py:2"]),  # (the request's own getattr, with its checks)
    ("real vars through a server module", TORCH, "v = torch.builtins.vars(torch)", ServerRefusal, ["vars()"]),
    ("abc register on a server class", 'binding abc module "abc"\nbinding c module "collections"',
     "abc.ABCMeta.register(c.abc.Sequence, int)", ServerImportError, ["'abc.ABCMeta.register'", "attack.py:2"]),
    ("getattr refused name with default", "", 'f = len\ng = getattr(f, "__self__", None)', ServerRefusal,
     ["__self__", "attack.py:3"]),
    ("getattribute returns unchecked format", "", F_DEF + '\ns = str.__getattribute__("{{0.__globals__}}", "format")(f)',
     ServerRefusal, ["__globals__", "attack.py:3"]),
    ("getattribute returns tofile", NP, 'a = np.zeros(2)\nobject.__getattribute__(a, "tofile")("{M}")',
     ServerImportError, ["tofile", "attack.py:3"]),
    ("nested class pattern", "", "match 1:\n    case object(real=object(imag=x)):\n        pass", ServerRefusal,
     ["real", "attack.py:3"]),
    ("class pattern on a module", TORCH, "match torch:\n    case object(os=o):\n        pass", ServerImportError,
     ["module 'os'", "attack.py:3"]),
    ("array interface over raw memory", NP,
     "class Raw:\n    __array_interface__ = {{'shape': (8,), 'typestr': '|u1', 'data': (id(np), False), 'version': 3}}"
     "\nx = np.asarray(Raw())", ServerRefusal, ["__array_interface__", "attack.py:3"]),
    ("array interface as a method", NP, "class Raw:\n    def __dlpack__(self):\n        return 0", ServerRefusal,
     ["__dlpack__", "attack.py:3"]),
    ("parameter shadows a guard", "", "def h(__nnsight_store__=None):\n    pass", ServerRefusal,
     ["__nnsight_store__", "attack.py:2"]),
]


@pytest.mark.parametrize("name,bindings,body,error,words", CASES, ids=[c[0] for c in CASES])
def test_hostile_request_is_refused_cleanly(gpt2, no_trace, name, bindings, body, error, words):
    text = ir_text(body.format(M=no_trace.marker) + "\nout = model.transformer.h[0].output[0].save()\n", bindings)
    with pytest.raises(error) as info:
        serve(gpt2, payload(gpt2, text))
    message = str(info.value)
    for word in words:
        assert word in message, (word, message)


def test_there_are_at_least_forty_hostile_loader_programs():
    assert len(CASES) >= 40


# -- the IR itself: bindings and definitions named like interpreter internals -----------------------------

VERIFY_CASES = [
    ("__builtins__ bound to builtins", 'binding __builtins__ module "builtins"', "", "__builtins__"),
    ("__import__ as a value", 'binding __import__ builtin "print"', "", "__import__"),
    ("definition global __builtins__", 'binding h function 0', '''
        definition 0 "h" module="lib" at "lib.py":1:0
          global __builtins__ module "builtins"
          | def h():
          |     return open("x")
        ''', "__builtins__"),
    ("definition attr __code__", 'binding h function 0', '''
        definition 0 "h" kind=local module="lib" at "lib.py":1:0
          attr __code__ value 1
          | def h():
          |     return 1
        ''', "__code__"),
]


@pytest.mark.parametrize("name,bindings,definitions,word", VERIFY_CASES, ids=[c[0] for c in VERIFY_CASES])
def test_dunder_bindings_are_refused_by_the_verifier(gpt2, no_trace, name, bindings, definitions, word):
    text = ir_text("out = model.transformer.h[0].output[0].save()\n", bindings, definitions)
    with pytest.raises(IRVerifyError, match=word):
        serve(gpt2, payload(gpt2, text))


# -- by-value code is guarded too ----------------------------------------------------------------------

LIB = '''
    definition 0 "Cache" module="lib" at "lib.py":1:0
      | class Cache:
      |     def __init__(self):
      |         self._store = {{}}
      |         self._hits = 0
      |
      |     def get(self, key, make):
      |         if key not in self._store:
      |             self._store[key] = make()
      |         self._hits += 1
      |         return self._store[key]
      |
      |     def escape(self):
      |         return {escape}
    '''


def test_private_attributes_of_own_classes_work_and_server_ones_do_not(gpt2, no_trace):
    body = ("c = Cache()\nh = model.transformer.h[0].output[0]\n"
            "out = c.get('a', lambda: h.sum()).save()\nhits = nnsight.save(c._hits)\n")
    bindings = 'binding Cache class 0\nbinding nnsight module "nnsight"'
    text = ir_text(body, bindings, LIB.format(escape="1"), assigned=["c", "h", "out", "hits"])
    result = serve(gpt2, payload(gpt2, text))
    assert result["hits"] == 1
    text = ir_text("out = Cache().escape()\n", 'binding Cache class 0',
                   LIB.format(escape="self.get.__func__.__globals__"))
    with pytest.raises(ServerRefusal, match=r"lib\.py:13:.*__func__"):
        serve(gpt2, payload(gpt2, text))


def test_library_code_cannot_reach_the_hosted_model_internals(gpt2, no_trace):
    definitions = """
        definition 0 "peek" module="lib" at "lib.py":1:0
          global m model "model"
          | def peek():
          |     return m._module.state_dict()
        """
    text = ir_text("out = peek()\n", "binding peek function 0", definitions)
    with pytest.raises(ServerRefusal, match=r"lib\.py:2: .*'_module'"):
        serve(gpt2, payload(gpt2, text))


def test_a_traced_method_cannot_be_a_file_writer(gpt2, no_trace):
    from compiler.ir import parse_program
    from compiler.ir.request import Request, encode_request
    from compiler.ir.values import encode_value
    from nnsight.tracing.remote import LocalServer, model_key

    program = parse_program(ir_text("out = 1\n"))
    for method in ("save_pretrained", "push_to_hub", "_apply"):
        data = encode_request(Request(program, model_key(gpt2), method, encode_value((no_trace.marker,)),
                                      encode_value({})))
        server = LocalServer()
        server.host(model_key(gpt2), gpt2)
        with pytest.raises(LoadError, match=method):
            server.handle(data)


def test_an_envoy_path_cannot_name_model_internals(gpt2, no_trace):
    text = ir_text("out = m\n", 'binding m model "model._module"')
    with pytest.raises(LoadError, match="_module"):
        serve(gpt2, payload(gpt2, text))


def test_load_errors_are_typed(gpt2, no_trace):
    text = ir_text("out = 1\n", 'binding h function 0', '''
        definition 0 "h" module="torch" at "lib.py":1:0
          | def h():
          |     return 1
        ''')
    with pytest.raises(LoadError, match="belongs to the server"):
        serve(gpt2, payload(gpt2, text))
