"""Hostile results decoded by the client, and classes sent by value rebuilt without their code.

The client resolves a reply only to what its own request sent (by identity,
from modules already loaded) and never imports a module the server names. On
both sides, instances of by-value classes are rebuilt field by field: their
``__new__``, ``__init__`` and ``__setstate__`` never run, and a half-built one
never reaches its ``__del__``.
"""
import gc
import importlib
import sys
import textwrap

import pytest

from compiler.closure import close_program
from compiler.frontend import lower
from compiler.ir.errors import IRDecodeError, IRLimitError
from compiler.ir.request import Request, encode_request, encode_result
from wire_attacks import bomb_frame, client_decode, no_trace, result_bytes, server_decode, shell

USERLIB = '''
import dataclasses


@dataclasses.dataclass
class Config:
    name: str
    sizes: list


class Guarded:
    """Every hook raises: if the decoder ran one, decoding would fail or report it."""

    def __new__(cls, *args):
        raise RuntimeError("__new__ ran")

    def __init__(self, *args):
        raise RuntimeError("__init__ ran")

    def __setstate__(self, state):
        raise RuntimeError("__setstate__ ran")

    def __reduce__(self):
        raise RuntimeError("__reduce__ ran")

    def __setattr__(self, name, value):
        raise RuntimeError("__setattr__ ran")

    def __del__(self):
        raise RuntimeError("__del__ ran on %r" % sorted(vars(self)))
'''


class _Model:
    """Stands for the traced model: only its envoy path is sent."""


@pytest.fixture
def userlib(tmp_path, monkeypatch):
    (tmp_path / "wire_userlib.py").write_text(textwrap.dedent(USERLIB))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("wire_userlib")
    yield module
    sys.modules.pop("wire_userlib", None)


@pytest.fixture
def sent(userlib):
    """A closed request that sends a Config instance and the Guarded class by value (as the client does)."""
    model = _Model()
    program = lower("with model.trace(x):\n    out = (cfg, guarded)\n", "client.py", 1)
    closure = close_program(program, {"model": model, "x": 1, "cfg": userlib.Config("a", [1]),
                                      "guarded": userlib.Guarded}, remote=True,
                            model_path=lambda o: "model" if o is model else None)
    index = {d.name: i for i, d in enumerate(closure.program.definitions)}
    return closure, index


@pytest.fixture
def unraisable(monkeypatch):
    """Exceptions raised in __del__ (reported through sys.unraisablehook)."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_value))
    return seen


def _fill(tree, marker):
    if tree == "<marker>":
        return shell(marker)
    return [_fill(x, marker) for x in tree] if isinstance(tree, list) else tree


HOSTILE_RESULTS = {
    "objref os:system": (["dict", ["f", ["objref", "os:system"]]], "module 'os'"),
    "namedtuple os:system": (["dict", ["f", ["namedtuple", "os:system", "<marker>"]]], "module 'os'"),
    "state subprocess:Popen": (["dict", ["f", ["state", "subprocess:Popen", ["dict"]]]], "subprocess"),
    "type builtins:eval": (["dict", ["f", ["type", "builtins:eval"]]], "builtin 'eval'"),
    "objref json:loads (harmless, but not sent)": (["dict", ["f", ["objref", "json:loads"]]], "did not send"),
    "object collections:Counter (a mapping record class, never built as an object)": (
        ["dict", ["f", ["object", "collections:Counter", [], []]]], "not a plain Python class"),
    "objref module json (not sent)": (["dict", ["f", ["objref", ["module", "json"]]]], "did not send"),
    "objref logger (not sent)": (["dict", ["f", ["objref", ["logger", "root"]]]], "did not send"),
    "objref def out of range": (["dict", ["f", ["objref", ["def", 10 ** 6]]]], "did not send"),
    "objref def attribute chain not sent": (["dict", ["f", ["objref", ["def", 0, "mro"]]]], "did not send"),
    "objref def __globals__": (["dict", ["f", ["objref", ["def", 0, "__globals__"]]]], "never reachable"),
    "objref envoy dunder path": (["dict", ["f", ["objref", ["model", "model.__class__"]]]], "never reachable"),
    "objref a module on disk, not loaded": (["dict", ["f", ["objref", "wire_client_sentinel:x"]]], "did not send"),
    "enumvalue importlib": (["dict", ["f", ["enumvalue", "importlib:import_module", "os"]]], "importlib"),
    "tensor with an object ndarray": (["dict", ["f", ["ndarray", "|O", [10 ** 8], b""]]], "object dtypes"),
    "mapping os:system": (["dict", ["f", ["mapping", "os:system", [["a", "<marker>"]], []]]], "module 'os'"),
    "mapping builtins:exec": (["dict", ["f", ["mapping", "builtins:exec", [], []]]], "builtin 'exec'"),
    "mapping dunder field": (["dict", ["f", ["mapping", "collections:Counter", [], [["__class__", 1]]]]],
                             "plain string"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_RESULTS))
def test_hostile_result_is_refused_by_the_client(name, sent, tmp_path, monkeypatch):
    closure, _ = sent
    (tmp_path / "wire_client_sentinel.py").write_text("import os\nos.system('touch %s')\nx = 1\n" % (
        tmp_path / "pwned"))
    monkeypatch.syspath_prepend(str(tmp_path))
    tree, message = HOSTILE_RESULTS[name]
    with no_trace(tmp_path) as marker:
        reply = result_bytes(_fill(tree, marker))
        with pytest.raises(IRDecodeError) as e:
            client_decode(reply, closure)
    assert message in str(e.value)


def test_result_bomb_is_refused_by_the_client(sent, tmp_path):
    closure, _ = sent
    with no_trace(tmp_path):
        with pytest.raises(IRLimitError, match="max_decompressed_bytes"):
            client_decode(b"NNRS" + bomb_frame(3 << 30, declare=True), closure)


def test_client_rebuilds_what_it_sent_without_running_its_code(sent, userlib, tmp_path, unraisable):
    closure, index = sent
    guarded, config = index["Guarded"], index["Config"]
    tree = ["dict", ["g", ["object", ["def", guarded], [["a", 1]], []]],
            ["s", ["state", ["def", guarded], ["dict", ["b", 2]]]],
            ["c", ["object", ["def", config], [["name", "x"], ["sizes", ["list", 3]]], []]],
            ["t", ["type", ["def", guarded]]]]
    with no_trace(tmp_path):
        out = client_decode(result_bytes(tree), closure)
    assert type(out["g"]) is userlib.Guarded and vars(out["g"]) == {"a": 1}
    assert vars(out["s"]) == {"b": 2}
    assert out["c"] == userlib.Config("x", [3]) and out["t"] is userlib.Guarded
    del out
    gc.collect()
    assert [str(e) for e in unraisable] == ["__del__ ran on ['a']", "__del__ ran on ['b']"]  # complete objects only


def test_half_built_instance_never_reaches_its_finalizer(sent, userlib, tmp_path, unraisable):
    closure, index = sent
    tree = ["dict", ["g", ["object", ["def", index["Guarded"]], [["a", 1], ["b", ["objref", "os:system"]]], []]]]
    with no_trace(tmp_path):
        with pytest.raises(IRDecodeError, match="module 'os'"):
            client_decode(result_bytes(tree), closure)
    gc.collect()
    assert unraisable == []


def test_server_rebuilds_by_value_instances_without_running_their_code(sent, tmp_path, unraisable):
    closure, index = sent
    guarded = index["Guarded"]
    args = ["tuple", ["object", ["def", guarded], [["a", 1]], []], ["state", ["def", guarded], ["dict", ["b", 2]]]]
    request = Request(closure.program, "model", "trace", args, ["dict"])
    with no_trace(tmp_path):
        ns = server_decode(encode_request(request))
    cls = ns["guarded"]
    assert cls.__name__ == "Guarded" and cls.__module__ == "wire_userlib"
    del ns, cls
    gc.collect()
    unraisable.clear()  # complete instances are finalized as usual
    bad = ["tuple", ["object", ["def", guarded], [["a", 1], ["b", ["objref", "subprocess:run"]]], []]]
    with no_trace(tmp_path):
        with pytest.raises(IRDecodeError, match="subprocess"):
            server_decode(encode_request(Request(closure.program, "model", "trace", bad, ["dict"])))
    gc.collect()
    assert unraisable == []


def test_server_does_not_rebuild_a_server_class_by_name(sent, tmp_path):
    """Only by-value classes (and torch's nn layers) are rebuilt; a server class named by string is not."""
    closure, _ = sent
    for tree in (["object", "logging:Logger", [["name", "x"]], []], ["state", "logging:FileHandler", ["dict"]],
                 ["namedtuple", "logging:LogRecord", 1]):
        request = Request(closure.program, "model", "trace", ["tuple", tree], ["dict"])
        with no_trace(tmp_path):
            with pytest.raises(IRDecodeError, match="neither defined by value|not a named tuple|'logging.FileHandler' is not available"):
                server_decode(encode_request(request))


def test_legitimate_result_round_trip(sent, userlib):
    """What a real server sends back (its own encoding of the saved values) still decodes."""
    import torch

    from compiler.ir.values import SentRefs, default_classref, encode_value

    closure, index = sent
    layer = torch.nn.Linear(2, 2)
    saved = {"cfg": userlib.Config("y", [1, 2]), "layer": layer, "t": torch.ones(3)}
    refs = SentRefs()

    def classref(cls):
        if cls is userlib.Config:
            return ["def", index["Config"]]
        return refs.recording(default_classref)(cls)

    reply = encode_result(encode_value(saved, classref=classref))
    out = client_decode(reply, closure)
    assert out["cfg"] == userlib.Config("y", [1, 2])
    assert torch.equal(out["layer"].weight, layer.weight) and type(out["layer"]) is torch.nn.Linear


@pytest.mark.parametrize("saved, bad", [({"out": 1, "model": 2}, "'model'"), ({"out": 1, 3: 4}, "binds 3"),
                                        ({"__builtins__": {}}, "'__builtins__'"), ([1], "not a dict")])
def test_a_result_binds_only_names_the_trace_assigns(saved, bad):
    """What every client (a trace's remote=True / 'local', RemoteModel) checks a decoded reply with
    before writing it into the caller's frame."""
    from compiler.ir.request import saved_variables

    with pytest.raises(IRDecodeError, match=bad):
        saved_variables(saved, ("out", "logits"))
    assert saved_variables({"out": 1}, ("out", "logits")) == {"out": 1}
