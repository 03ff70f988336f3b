"""Hostile value trees inside a request, decoded by the server as it does before running anything.

Each tree is written by hand and put into a request's binding (via hand-written
IR text) or its call arguments; the server path (decode_request, verify, the
loader decoding values) must refuse it with IRDecodeError, before any import
or call, and leave no trace (:func:`wire_attacks.no_trace`).
"""
import pytest

from compiler.ir.errors import IRDecodeError, IRLimitError
from compiler.ir.limits import DecodeLimits
from compiler.ir.values import decode_value
from wire_attacks import no_trace, request_with, server_decode, shell

MARK = "<marker>"  # replaced by the test's marker file path


def _fill(tree, marker):
    if tree == MARK:
        return shell(marker)
    if isinstance(tree, list):
        return [_fill(x, marker) for x in tree]
    return tree


# (tree, expected error message): every tag that names something, pointed at code execution
NAMING_ATTACKS = {
    "namedtuple os:system": (["namedtuple", "os:system", MARK], "module 'os'"),
    "enumvalue subprocess:Popen": (["enumvalue", "subprocess:Popen", ["list", "sh", "-c", MARK]], "subprocess"),
    "enum subprocess:run": (["enum", "subprocess:run", "x"], "subprocess"),
    "state os:system": (["state", "os:system", MARK], "module 'os'"),
    "object subprocess:Popen": (["object", "subprocess:Popen", [["args", MARK]], []], "subprocess"),
    "type builtins:eval": (["type", "builtins:eval"], "builtin 'eval'"),
    "objref builtins:exec": (["objref", "builtins:exec"], "builtin 'exec'"),
    "objref builtins:__import__": (["objref", "builtins:__import__"], "never reachable"),
    "objref os:system": (["objref", "os:system"], "module 'os'"),
    "objref importlib:import_module": (["objref", "importlib:import_module"], "importlib"),
    "objref pickle:loads": (["objref", "pickle:loads"], "pickle"),
    "objref ctypes:CDLL": (["objref", "ctypes:CDLL"], "ctypes"),
    "objref module os": (["objref", ["module", "os"]], "module 'os'"),
    "objref module subprocess": (["objref", ["module", "subprocess"]], "subprocess"),
    "objref torch:os (an allowed module leading to a refused one)": (["objref", "torch:os"], "module 'os' is not available"),
    "objref logging:sys": (["objref", "logging:sys"], "module 'sys' is not available"),
    "objref runtime.loader:importlib": (["objref", "runtime.loader:importlib"],
                                          "'runtime.loader' is not available"),
    "objref torch:save.__globals__": (["objref", "torch:save.__globals__"], "never reachable"),
    "objref dunder chain": (["objref", "logging:Logger.__init__.__globals__"], "never reachable"),
    "objref def __globals__": (["objref", ["def", 0, "__globals__"]], "never reachable"),
    "objref envoy path through dunders": (["objref", ["model", "model.__class__.__init__.__globals__"]],
                                          "never reachable"),
    "objref malformed name": (["objref", "os.path:join;rm -rf /"], "malformed reference"),
    "namedtuple torch:save (allowed function, not a class)": (
        ["namedtuple", "torch:save", ["dict"], "/tmp/x"], "'torch.save' is not available"),
    "object torch:Tensor (C type)": (["object", "torch:Tensor", [], []], "not a plain Python class"),
    "state logging:FileHandler (server class, not allowlisted)": (
        ["state", "logging:FileHandler", ["dict", ["baseFilename", "x"]]], "'logging.FileHandler' is not available"),
    "mapping os:system": (["mapping", "os:system", [["a", MARK]], []], "module 'os'"),
    "mapping subprocess:Popen": (["mapping", "subprocess:Popen", [], [["args", MARK]]], "subprocess"),
    "mapping builtins:eval": (["mapping", "builtins:eval", [], []], "builtin 'eval'"),
    "mapping dunder chain": (["mapping", "collections:OrderedDict.__init__.__globals__", [], []], "never reachable"),
    "mapping with a list reference": (["mapping", ["module", "os"], [], []], "module:qualname"),
    "object logging:Logger (server class, not allowlisted)": (
        ["object", "logging:Logger", [["name", "x"]], []], "neither defined by value"),
    "state nn.Linear with a non-dict state": (
        ["state", "torch.nn.modules.linear:Linear", ["tuple", "os:system", MARK]], "only a __dict__"),
    "enum torch:save": (["enum", "torch:save", "x"], "'torch.save' is not available"),
    "type with unknown tag": (["pickle", "os:system", MARK], "unknown tag"),
    "ref to unknown shared id": (["ref", 7], "unknown shared id"),
    "shared id not an int": (["shared", "os:system", ["list"]], "shared id must be an int"),
}

DATA_ATTACKS = {
    "tensor bogus dtype": (["tensor", "os", [1], b"\0", False, "cpu"], IRDecodeError, "unknown torch dtype"),
    "tensor dunder dtype": (["tensor", "__class__", [1], b"\0", False, "cpu"], IRDecodeError, "unknown torch dtype"),
    "tensor negative dim": (["tensor", "float32", [-1, 4], b"", False, "cpu"], IRDecodeError, "bad dimension"),
    "tensor huge shape, tiny buffer": (["tensor", "float32", [300_000_000], b"\0" * 4, False, "cpu"],
                                       IRDecodeError, "needs 1200000000 bytes, got 4"),
    "tensor 3 GB shape, tiny buffer": (["tensor", "float64", [400_000_000], b"\0" * 4, False, "cpu"],
                                       IRLimitError, "max_tensor_bytes"),
    "tensor shape product overflow": (["tensor", "float32", [2 ** 62, 2 ** 62], b"", False, "cpu"],
                                      IRLimitError, "max_tensor_bytes"),
    "tensor too many dims": (["tensor", "float32", [1] * 100, b"\0" * 4, False, "cpu"], IRLimitError, "max_dims"),
    "tensor bytes do not match": (["tensor", "float32", [1000, 1000], b"\0" * 8, False, "cpu"],
                                  IRDecodeError, "needs 4000000 bytes, got 8"),
    "meta tensor out of range": (["tensor", "float32", [2 ** 62, 8], None, False, "meta"], IRDecodeError,
                                 "out of range"),
    "ndarray object dtype, 300M elements": (["ndarray", "|O", [300_000_000], b""], IRDecodeError,
                                            "object dtypes are never rebuilt"),
    "ndarray structured with an object field": (["ndarray", [["a", "<f8"], ["b", "|O"]], [10], b""],
                                                IRDecodeError, "object"),
    "ndarray 300M doubles, 8 bytes sent": (["ndarray", "<f8", [300_000_000], b"\0" * 8], IRLimitError,
                                           "max_tensor_bytes"),
    "ndarray zero-size items, huge count": (["ndarray", "|V0", [2 ** 40], b""], IRLimitError, "max_tensor_bytes"),
    "ndarray subarray dtype bomb": (["ndarray", [["a", "<f8", [100_000, 100_000]]], [1], b""], IRDecodeError,
                                    "dtype size"),
    "ndarray subarray dtype, huge count": (["ndarray", [["a", "<f8", [1000]]], [10_000_000], b""], IRLimitError,
                                           "max_tensor_bytes"),
    "npscalar object dtype": (["npscalar", "|O", b""], IRDecodeError, "object dtypes are never rebuilt"),
    "npdtype object": (["npdtype", "|O"], IRDecodeError, "object dtypes are never rebuilt"),
    "device not a string": (["device", ["objref", "os:system"]], IRDecodeError, "short string"),
}


@pytest.mark.parametrize("name", sorted(NAMING_ATTACKS))
def test_naming_attack_in_a_binding(name, tmp_path):
    tree, message = NAMING_ATTACKS[name]
    with no_trace(tmp_path) as marker:
        payload = request_with(value=_fill(tree, marker))
        with pytest.raises(IRDecodeError) as e:
            server_decode(payload)
    assert message in str(e.value)
    # a refusal while decoding names the binding, never the toolchain's own file as if it were the user's line
    assert str(e.value).startswith("binding ") and ".py:" not in str(e.value)


@pytest.mark.parametrize("name", sorted(DATA_ATTACKS))
def test_data_attack_in_the_arguments(name, tmp_path):
    tree, error, message = DATA_ATTACKS[name]
    with no_trace(tmp_path):
        payload = request_with(args=["tuple", tree])
        with pytest.raises(error) as e:
            server_decode(payload)
    assert message in str(e.value)
    assert type(e.value) is error


def test_every_naming_attack_is_refused_without_any_hook(tmp_path):
    """decode_value itself (no resolve hook) refuses every reference, whatever it names."""
    for name, (tree, _) in NAMING_ATTACKS.items():
        with no_trace(tmp_path) as marker:
            with pytest.raises(IRDecodeError):
                decode_value(_fill(tree, marker))


def test_a_sentinel_module_is_never_imported(tmp_path, monkeypatch):
    """A module on sys.path that would leave the marker when imported: naming it imports nothing."""
    (tmp_path / "wire_sentinel.py").write_text(
        "import pathlib\npathlib.Path(%r).touch()\nclass C:\n    pass\n" % str(tmp_path / "pwned"))
    monkeypatch.syspath_prepend(str(tmp_path))
    for tree in (["objref", "wire_sentinel:C"], ["type", "wire_sentinel:C"], ["objref", ["module", "wire_sentinel"]],
                 ["object", "wire_sentinel:C", [], []], ["namedtuple", "wire_sentinel:C"]):
        with no_trace(tmp_path):
            with pytest.raises(IRDecodeError, match="wire_sentinel"):
                server_decode(request_with(value=tree))
            with pytest.raises(IRDecodeError, match="wire_sentinel"):
                decode_value(tree)


def test_deep_nesting_is_a_limit_error_not_a_crash(tmp_path):
    tree = "leaf"
    for _ in range(300):
        tree = ["list", tree]
    with no_trace(tmp_path):
        with pytest.raises(IRLimitError, match="max_depth"):
            server_decode(request_with(args=["tuple", tree]))
        with pytest.raises(IRLimitError, match="max_depth"):
            decode_value(tree)
    assert decode_value(tree, limits=DecodeLimits(max_depth=350))[0][0][0] is not None  # raising it works


def test_node_count_and_string_limits(tmp_path):
    many = ["list"] + [["list"]] * 2000
    with no_trace(tmp_path):
        with pytest.raises(IRLimitError, match="max_items"):
            decode_value(many, limits=DecodeLimits(max_items=1000))
        from compiler.ir.request import decode_request

        payload = request_with(args=["tuple", "x" * 5000])
        with pytest.raises(IRLimitError, match="max_str_bytes"):
            decode_request(payload, limits=DecodeLimits(max_str_bytes=4096))
        payload = request_with(args=["tuple", b"x" * 5000])
        with pytest.raises(IRLimitError, match="max_bytes_len"):
            decode_request(payload, limits=DecodeLimits(max_bytes_len=4096))
    assert len(decode_value(many)) == 2000
