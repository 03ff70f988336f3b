"""Hostile ``mapping`` nodes (mapping records such as a transformers ``ModelOutput``).

A reply may name a mapping record's class; the client rebuilds it only when that
class is already loaded here and subclasses an allowlisted base (``ModelOutput``,
``OrderedDict``, ``Counter``), without running any of its code; a class that is not
loaded decodes as a plain :class:`MappingRecord` and is never imported; anything
else is refused. Each case is decoded by the client path (``client_decode``) or by
the server's (``server_decode``), inside :func:`wire_attacks.no_trace`.
"""
import gc
import importlib
import sys
import textwrap
from collections import Counter, OrderedDict

import pytest
import torch
from transformers.modeling_outputs import CausalLMOutputWithCrossAttentions

from compiler.closure import close_program
from compiler.frontend import lower
from compiler.ir.errors import IRDecodeError, IRLimitError
from compiler.ir.limits import DecodeLimits
from compiler.ir.request import decode_result, encode_result
from compiler.ir.values import decode_value, encode_value
from compiler.ir.values.mappings import MappingRecord
from wire_attacks import client_decode, no_trace, request_with, result_bytes, server_decode

RECORDLIB = '''
from collections import OrderedDict


class Guarded(OrderedDict):
    """An OrderedDict subclass whose every hook raises: rebuilding must run none of them."""

    def __new__(cls, *args, **kwargs):
        raise RuntimeError("__new__ ran")

    def __init__(self, *args, **kwargs):
        raise RuntimeError("__init__ ran")

    def __setitem__(self, key, value):
        raise RuntimeError("__setitem__ ran")

    def __setattr__(self, name, value):
        raise RuntimeError("__setattr__ ran")

    def __setstate__(self, state):
        raise RuntimeError("__setstate__ ran")

    def update(self, *args, **kwargs):
        raise RuntimeError("update ran")


class Finalized(OrderedDict):
    def __del__(self):
        raise RuntimeError("__del__ ran")


class Slotted(OrderedDict):
    __slots__ = ("x",)


class NotARecord(dict):
    pass
'''


@pytest.fixture
def recordlib(tmp_path, monkeypatch):
    (tmp_path / "wire_recordlib.py").write_text(textwrap.dedent(RECORDLIB))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("wire_recordlib")
    yield module
    sys.modules.pop("wire_recordlib", None)


@pytest.fixture
def closure():
    """A closed request that sends nothing but data (so the reply may name no class of its own)."""
    program = lower("with model.trace(x):\n    out = x\n", "client.py", 1)
    model = object()
    return close_program(program, {"model": model, "x": 1}, remote=True,
                         model_path=lambda o: "model" if o is model else None)


def _reply(node):
    return result_bytes(["dict", ["f", node]], version=2)


def test_model_output_is_rebuilt_without_its_code(closure, tmp_path):
    """The real thing: what a server encodes for a ModelOutput is rebuilt as the same class."""
    logits = torch.arange(6.0).reshape(2, 3)
    reply = encode_result(encode_value({"f": CausalLMOutputWithCrossAttentions(logits=logits)}, records=True))
    with no_trace(tmp_path):
        out = client_decode(reply, closure)["f"]
    assert type(out) is CausalLMOutputWithCrossAttentions and list(out) == ["logits"]
    assert torch.equal(out.logits, logits) and out.logits is out["logits"] and out.loss is None
    assert torch.equal(out[0], logits)


def test_guarded_subclass_is_rebuilt_without_running_any_hook(closure, recordlib, tmp_path):
    node = ["mapping", "wire_recordlib:Guarded", [["b", 1], ["a", ["list", 2]]], [["note", "x"]]]
    with no_trace(tmp_path):
        out = client_decode(_reply(node), closure)["f"]
    assert type(out) is recordlib.Guarded and list(out.items()) == [("b", 1), ("a", [2])]
    assert vars(out) == {"note": "x"}


@pytest.mark.parametrize("name, message", [
    ("Finalized", "defines __del__"),
    ("Slotted", "has __slots__"),
    ("NotARecord", "not a subclass of a mapping record base"),
])
def test_loaded_classes_that_are_not_mapping_records_are_refused(name, message, closure, recordlib, tmp_path):
    """Where the hook answers with a class, it must be a plain mapping record class (server side:
    the loader answers wire_recordlib classes only if its policy allows; here decode with a hook
    that answers everything loaded, the most permissive a caller could be)."""
    from compiler.ir.values.mappings import loaded

    node = ["mapping", "wire_recordlib:%s" % name, [["a", 1]], []]
    with no_trace(tmp_path):
        with pytest.raises(IRDecodeError, match=message):
            decode_value(node, resolve=loaded)
        out = client_decode(_reply(node), closure)["f"]  # the client answers only mapping records
    if name == "NotARecord":
        assert type(out) is MappingRecord and out == {"a": 1}
    gc.collect()


def test_a_class_that_is_not_loaded_falls_back_and_is_never_imported(closure, tmp_path, monkeypatch):
    (tmp_path / "wire_record_sentinel.py").write_text(
        "import pathlib\npathlib.Path(%r).touch()\nfrom collections import OrderedDict\n"
        "class Out(OrderedDict):\n    pass\n" % str(tmp_path / "pwned"))
    monkeypatch.syspath_prepend(str(tmp_path))
    node = ["mapping", "wire_record_sentinel:Out", [["logits", ["list", 1, 2]]], [["logits", ["list", 1, 2]],
                                                                                   ["loss", None]]]
    with no_trace(tmp_path):
        out = client_decode(_reply(node), closure)["f"]
        plain = decode_value(node)  # no hook at all: the same fallback
        server = server_decode(request_with(value=node))["v"]
    for record in (out, plain, server):
        assert type(record) is MappingRecord and record.record_class == "wire_record_sentinel:Out"
        assert record == {"logits": [1, 2]} and record.logits == [1, 2] and record.loss is None
        with pytest.raises(AttributeError, match="no field 'missing'"):
            record.missing
    assert "wire_record_sentinel" not in sys.modules


def test_model_output_without_transformers_loaded_falls_back(closure, tmp_path):
    """A torch-free client: transformers is not loaded, so the hook cannot answer (simulated by
    decoding with no hook): a MappingRecord with the same items and fields."""
    reply = encode_result(encode_value({"f": CausalLMOutputWithCrossAttentions(logits=torch.ones(2))},
                                       records=True))
    out = decode_value(decode_result(reply))["f"]
    assert type(out) is MappingRecord and list(out) == ["logits"] and out.attentions is None
    assert out.record_class == "transformers.modeling_outputs:CausalLMOutputWithCrossAttentions"
    assert out.logits is out["logits"] and torch.equal(out.logits, torch.ones(2))


@pytest.mark.parametrize("node, error, message", [
    (["mapping", "transformers.modeling_outputs:CausalLMOutput", [[1, 2]], []], IRDecodeError, "field names"),
    (["mapping", "collections:Counter", [], [["__dict__", 1]]], IRDecodeError, "plain string"),
    (["mapping", "collections:Counter", [], [["x" * 300, 1]]], IRDecodeError, "plain string"),
    (["mapping", "collections:Counter", "items", []], IRDecodeError, "must be a list"),
    (["mapping", "collections:Counter", [["a"]], []], IRDecodeError, "must be [key, value]"),
    (["mapping", "collections:Counter", [], []] + [[]], IRDecodeError, "needs 4 items"),
    (["mapping", "collections:Counter", [[["list"], 1]], []], IRDecodeError, "unhashable"),
    (["mapping", "collections:Counter", [["a", ["ndarray", "<f8", [300_000_000], b""]]], []], IRLimitError,
     "max_tensor_bytes"),
    (["mapping", "collections:OrderedDict", [["a", ["objref", "os:system"]]], []], IRDecodeError, "module 'os'"),
])
def test_malformed_and_oversized_records_are_refused(node, error, message, closure, tmp_path):
    with no_trace(tmp_path):
        with pytest.raises(error) as e:
            client_decode(_reply(node), closure)
    assert message in str(e.value)


def test_huge_and_deep_records_hit_the_limits(closure, tmp_path):
    many = ["mapping", "collections:Counter", [[i, 1] for i in range(2000)], []]
    deep = "leaf"
    for _ in range(300):
        deep = ["mapping", "collections:OrderedDict", [["a", deep]], []]
    with no_trace(tmp_path):
        with pytest.raises(IRLimitError, match="max_items"):
            decode_value(["mapping", "x:Y", [[i, ["list"]] for i in range(2000)], []],
                         limits=DecodeLimits(max_items=1000))
        with pytest.raises(IRLimitError, match="max_depth"):
            client_decode(_reply(deep), closure)
    out = decode_value(many, resolve=lambda ref: Counter)
    assert type(out) is Counter and len(out) == 2000


def test_shared_and_cyclic_records(closure):
    """Sharing is kept (a field that is also an item is one object) and cycles close."""
    d = OrderedDict()
    d["self"] = d
    counter = Counter(a=1)
    counter.extra = d
    out = client_decode(encode_result(encode_value({"f": counter}, records=True)), closure)["f"]
    assert type(out) is Counter and out == {"a": 1} and out.extra["self"] is out.extra


def test_programs_never_hold_records():
    """Without records=True (programs, requests) a mapping record is not a value: the IR is unchanged."""
    from compiler.ir.errors import UnencodableValueError

    with pytest.raises(UnencodableValueError, match="unsupported type"):
        encode_value(Counter(a=1))
    assert encode_value(OrderedDict(a=1)) == ["odict", ["a", 1]]


def test_result_version_follows_the_content():
    """A result with a mapping record is version 2; any other stays version 1 (old clients read it)."""
    from compiler.ir import framing

    def version(saved):
        return framing.read_body(encode_result(encode_value(saved, records=True)), 4, "result")["version"]

    assert version({"a": [1, 2]}) == 1
    assert version({"a": Counter(x=1)}) == 2
    with pytest.raises(IRDecodeError, match="upgrade nnsight"):
        decode_result(result_bytes(["dict"], version=3))


@pytest.mark.parametrize("tag", ["type", "objref", "mapping", "object"])
def test_a_lazy_package_attribute_is_never_imported(tag, closure, tmp_path):
    """transformers exports most names lazily (its module ``__getattr__`` imports on access): a reply
    naming one it did not send must be answered from the loaded namespaces only, importing nothing."""
    import transformers

    name = "Wav2Vec2ConformerForCTC"
    if name in transformers.__dict__:
        pytest.skip("%s was already imported in this process" % name)
    node = {"type": ["type", "transformers:" + name], "objref": ["objref", "transformers:" + name],
            "mapping": ["mapping", "transformers:" + name, [], []],
            "object": ["object", "transformers:" + name, [], []]}[tag]
    with no_trace(tmp_path):
        if tag == "mapping":
            assert type(client_decode(_reply(node), closure)["f"]) is MappingRecord
        else:
            with pytest.raises(IRDecodeError, match="did not send"):
                client_decode(_reply(node), closure)
    assert name not in transformers.__dict__
