"""Value trees: exact round trips, shared references, cycles, hooks and errors."""
import collections
import dataclasses
import enum
import math
import struct
import threading

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.ir import Binding, CodeUnit, Header, Program, SourceLoc, decode, encode, parse_program, print_program
from compiler.ir.errors import IRDecodeError, UnencodableValueError
from compiler.ir.values import SentRefs, decode_value, default_classref, encode_value


# -- helpers --------------------------------------------------------------------------


def same(a, b, seen=None):
    """Structural equality that also distinguishes nan payloads, -0.0 and container types."""
    seen = {} if seen is None else seen
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, (list, tuple, dict)):
        key = (id(a), id(b))
        if key in seen:
            return True
        seen[key] = True
        if isinstance(a, dict):
            return same(list(a), list(b), seen) and same(list(a.values()), list(b.values()), seen)
        return len(a) == len(b) and all(same(x, y, seen) for x, y in zip(a, b))
    if isinstance(a, slice):
        return same(a.start, b.start, seen) and same(a.stop, b.stop, seen) and same(a.step, b.step, seen)
    return a == b


def tree_roundtrips(tree):
    """The tree survives msgpack and the text form exactly."""
    assert same(msgpack.unpackb(msgpack.packb(tree, use_bin_type=True), raw=False), tree)
    p = Program(Header(), (CodeUnit(0, "trace", "x\n", SourceLoc("t.py", 1)),), (Binding("v", "value", tree),))
    assert same(parse_program(print_program(p)).bindings[0].value, tree)
    assert same(decode(encode(p)).bindings[0].value, tree)


def roundtrip(obj, **kw):
    """Encode, check the tree survives both forms, decode with the references the encoding sent."""
    sent = SentRefs()
    tree = encode_value(obj, where="test", classref=sent.recording(default_classref))
    tree_roundtrips(tree)
    kw.setdefault("resolve", sent.resolve)
    kw.setdefault("may_build", sent.may_build)
    return decode_value(tree, **kw)


# -- plain data (hypothesis) ----------------------------------------------------------

hashable = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
    | st.binary(max_size=5),
    lambda c: st.tuples(c, c) | st.frozensets(c, max_size=3),
    max_leaves=6,
)
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-(2 ** 200), 2 ** 200) | st.floats()
    | st.complex_numbers() | st.text(max_size=8) | st.binary(max_size=8) | st.just(Ellipsis)
    | st.builds(range, st.integers(-5, 5), st.integers(-5, 5), st.integers(1, 3)),
    lambda c: st.lists(c, max_size=4) | st.lists(c, max_size=4).map(tuple)
    | st.dictionaries(hashable, c, max_size=4) | st.sets(hashable, max_size=4)
    | st.frozensets(hashable, max_size=4) | st.builds(slice, c, c, c) | st.binary(max_size=4).map(bytearray),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None, database=None)
@given(values)
def test_plain_values_roundtrip(obj):
    assert same(roundtrip(obj), obj)


_ENCODE_UNDER_SEED = """
import sys, msgpack
from compiler.ir.values import encode_value
values = [
    {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"},
    frozenset({"x", "y", "z", ("t", 1), 3.5, b"raw"}),
    {"k1": {"a", "b", "c"}, "k2": [frozenset({"q", "r", "s"})], ("tuple", "key"): None},
    [set(), {1, 2, 3}, {"mixed", 1, 2.0, b"bytes", ("n", ("e", "s"))}],
]
sys.stdout.buffer.write(b"".join(msgpack.packb(encode_value(v), use_bin_type=True) for v in values))
"""


def test_encoding_does_not_depend_on_the_hash_seed():
    """Set and dict encodings must not follow hash order: two processes, two seeds, same bytes."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": root}
        done = subprocess.run([sys.executable, "-c", _ENCODE_UNDER_SEED], env=env, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr.decode()
        outputs.append(done.stdout)
    assert outputs[0] and outputs[0] == outputs[1]


@pytest.mark.parametrize("x", [0.0, -0.0, math.inf, -math.inf, math.nan, -math.nan,
                               struct.unpack(">d", bytes.fromhex("7ff0000000000123"))[0], 5e-324, 1e308])
def test_special_floats_exact(x):
    assert same(roundtrip(x), x)
    assert same(roundtrip(complex(x, -x)), complex(x, -x))


def test_big_ints():
    for n in (2 ** 63 - 1, -(2 ** 63), 2 ** 63, -(2 ** 63) - 1, 10 ** 5000, -(7 ** 9000)):
        assert roundtrip(n) == n


def test_sets_are_deterministic():
    s = {"alpha", "beta", "gamma", ("x", 1), 3, None}
    tree = encode_value(s)
    assert tree[0] == "set" and tree == encode_value(set(sorted(s, key=repr)))
    assert roundtrip(s) == s


# -- identity --------------------------------------------------------------------------


def test_shared_references():
    x = [1, 2]
    out = roundtrip([x, x, {"k": x}])
    assert out[0] is out[1] is out[2]["k"]
    plain = encode_value([[1], [1]])
    assert "shared" not in repr(plain)  # unshared objects carry no ids


def test_shared_ids_numbered_from_first_shared():
    """A tree meant to sit inside another (the sandbox's results) numbers its ids above the other's."""
    x, y = [1], [2]
    tree = encode_value([x, y, x, y], first_shared=7)
    assert tree == ["list", ["shared", 7, ["list", 1]], ["shared", 8, ["list", 2]], ["ref", 7], ["ref", 8]]
    out = decode_value(tree)
    assert out == [[1], [2], [1], [2]] and out[0] is out[2] and out[1] is out[3]


def test_list_and_dict_cycles():
    a = []
    a.append(a)
    out = roundtrip(a)
    assert out[0] is out
    d = {}
    d["self"] = d
    d["l"] = [d]
    out = roundtrip(d)
    assert out["self"] is out and out["l"][0] is out


def test_tuple_cycle():
    inner = []
    t = (inner, 1)
    inner.append(t)
    out = roundtrip([t, t])
    assert out[0] is out[1]
    assert out[0][0][0] is out[0]


class Node:
    def __init__(self, name):
        self.name = name
        self.peers = set()


def test_object_and_set_cycle():
    a, b = Node("a"), Node("b")
    a.peers.add(b)
    b.peers.add(a)
    out = roundtrip([a, b])
    assert out[0].name == "a" and next(iter(out[0].peers)) is out[1]
    assert next(iter(out[1].peers)) is out[0]


# -- classes -----------------------------------------------------------------------------


class Color(enum.Enum):
    RED = 1
    GREEN = "g"


class Level(enum.IntEnum):
    LOW = 1


class Perm(enum.Flag):
    R = 1
    W = 2


@dataclasses.dataclass
class Config:
    name: str
    layers: list
    scale: float = 1.0


@dataclasses.dataclass(frozen=True)
class Frozen:
    a: int
    b: tuple


class Slotted:
    __slots__ = ("x", "__hidden", "unset")

    def __init__(self, x):
        self.x = x
        self.__hidden = x * 2

    def hidden(self):
        return self.__hidden


class WithState:
    def __init__(self, v):
        self.v = v
        self.lock = threading.Lock()

    def __getstate__(self):
        return {"v": self.v}

    def __setstate__(self, state):
        self.v = state["v"]
        self.lock = threading.Lock()


Point = collections.namedtuple("Point", "x y")


def test_enums():
    assert roundtrip(Color.RED) is Color.RED
    assert roundtrip(Color.GREEN) is Color.GREEN
    assert roundtrip(Level.LOW) is Level.LOW
    assert roundtrip(Perm.R | Perm.W) == Perm.R | Perm.W
    assert roundtrip([Color, int]) == [Color, int]


def test_dataclasses_and_instances():
    c = Config("demo", [1, 2], 0.5)
    assert roundtrip(c) == c
    f = Frozen(1, (2, 3))
    assert roundtrip(f) == f
    s = roundtrip(Slotted(3))
    assert s.x == 3 and s.hidden() == 6 and not hasattr(s, "unset")
    w = roundtrip(WithState(7))  # rebuilt field by field: the decoder never runs __setstate__
    assert w.v == 7 and not hasattr(w, "lock")
    p = roundtrip(Point(1, [2]))
    assert type(p) is Point and p == (1, [2])
    od = roundtrip(collections.OrderedDict([("b", 1), ("a", 2)]))
    assert type(od) is collections.OrderedDict and list(od) == ["b", "a"]


def test_classref_and_resolve_hooks():
    defs = []

    def classref(cls):
        defs.append(cls)
        return ["byvalue", len(defs) - 1]

    tree = encode_value(Config("x", []), classref=classref)
    assert tree[1] == ["byvalue", 0]
    out = decode_value(tree, resolve=lambda ref: defs[ref[1]], may_build=lambda cls: cls in defs)
    assert out == Config("x", [])


def test_local_class_needs_a_hook():
    class Local:
        pass

    with pytest.raises(UnencodableValueError, match="inside a function"):
        encode_value(Local(), where="captured variable `obj` at demo.py:3")


# -- errors ------------------------------------------------------------------------------


def test_unencodable_lock_message():
    with pytest.raises(UnencodableValueError) as e:
        encode_value({"cfg": [1, threading.Lock()]}, where="captured variable `foo` at demo.py:12")
    msg = str(e.value)
    assert "lock" in msg and "captured variable `foo` at demo.py:12" in msg
    assert "['cfg'][1]" in msg and "without pickle" in msg
    with pytest.raises(UnencodableValueError) as e:
        encode_value([0, (1, [2, threading.Lock()], 3)])
    assert " at [1][1][1]: " in str(e.value)


def test_unencodable_generator_message():
    gen = (i for i in range(3))
    with pytest.raises(UnencodableValueError, match=r"generator.*captured variable `g`"):
        encode_value(gen, where="captured variable `g`")
    with pytest.raises(UnencodableValueError, match="function"):
        encode_value(lambda: 1)


def test_malformed_trees():
    for bad in (["nope"], ["list", ("tuple",)], ["ref", 3], ["shared", 0, 5], ["float", "abc"], [1, 2], (1,)):
        with pytest.raises(IRDecodeError):
            decode_value(bad)


# -- torch -------------------------------------------------------------------------------


def _all_dtypes(torch):
    seen = []
    for v in vars(torch).values():
        if isinstance(v, torch.dtype) and v not in seen:
            seen.append(v)
    return seen


def _raw(t):
    from compiler.ir.values import tensor_bytes  # the encoder's own byte view
    import torch

    return tensor_bytes(t.detach(), torch)


def _random_tensor(torch, dtype, shape=(2, 3, 4)):
    n = 1
    for d in shape:
        n *= d
    data = torch.randint(0, 256, (n * dtype.itemsize,), dtype=torch.uint8)
    return data.view(dtype).reshape(shape)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_every_torch_dtype():
    torch = pytest.importorskip("torch")
    for dtype in _all_dtypes(torch):
        x = torch.empty(3, dtype=dtype)
        if x.is_quantized:
            with pytest.raises(UnencodableValueError, match="quantized"):
                encode_value(x)
            continue
        t = _random_tensor(torch, dtype)
        if dtype == torch.bool:
            t = t.view(torch.uint8) % 2 == 1
        out = roundtrip(t)
        assert out.dtype == dtype and out.shape == t.shape, dtype
        assert _raw(out) == _raw(t), dtype


def test_tensor_views_flags_and_identity():
    torch = pytest.importorskip("torch")
    base = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    for t in (base.transpose(0, 2), base[:, ::2, 1:], base[0, 0].expand(5, 4), base[..., 0]):
        assert not t.is_contiguous()
        out = roundtrip(t)
        assert out.shape == t.shape and torch.equal(out, t)
    z = torch.randn(3, 2, dtype=torch.complex64)
    assert torch.equal(roundtrip(z.conj()), z.conj().resolve_conj())
    assert torch.equal(roundtrip(torch.tensor(3.5)), torch.tensor(3.5))
    assert roundtrip(torch.empty(0, 3)).shape == (0, 3)
    logits = torch.randn(1, 768)
    for t in (logits[:, -1], logits.bfloat16()[:, -1], torch.zeros(4, dtype=torch.float16)[:0:2]):
        assert t.is_contiguous() and t.stride(-1) != 1  # 0 or 1 items: contiguous whatever the stride
        out = roundtrip(t)
        assert out.dtype == t.dtype and torch.equal(out, t)
    g = roundtrip(torch.ones(2, requires_grad=True))
    assert g.requires_grad and g.is_leaf
    p = roundtrip(torch.nn.Parameter(torch.ones(2)))
    assert isinstance(p, torch.nn.Parameter) and p.requires_grad
    m = roundtrip(torch.empty(4, 5, device="meta"))
    assert m.device.type == "meta" and m.shape == (4, 5)
    t = torch.ones(3)
    out = roundtrip({"a": t, "b": [t]})
    assert out["a"] is out["b"][0]


def test_torch_dtype_device_size():
    torch = pytest.importorskip("torch")
    assert roundtrip([torch.bfloat16, torch.device("cuda:1"), torch.Size([2, 3])]) == [
        torch.bfloat16, torch.device("cuda:1"), torch.Size([2, 3])]
    assert type(roundtrip(torch.Size([1]))) is torch.Size


def test_sparse_tensor_rejected():
    torch = pytest.importorskip("torch")
    with pytest.raises(UnencodableValueError, match="dense"):
        encode_value(torch.eye(3).to_sparse())


def _same_as_reference(t, torch):
    """t encodes (alone, and shared in a list) to the general path's exact bytes (the fast path must
    not change a byte), and decodes back."""
    from compiler.ir.framing import pack
    from compiler.ir.values import arrays

    try:
        ref = arrays._tensor_node(t, torch)
    except arrays.Reject as e:  # refused: the same reason
        with pytest.raises(UnencodableValueError) as raised:
            encode_value(t)
        assert str(raised.value).endswith(": %s" % e.args[0])
        return
    except Exception as e:  # torch's own error (a zero tensor): the same one
        with pytest.raises(type(e)) as raised:
            encode_value(t)
        assert str(raised.value) == str(e)
        return
    assert pack(encode_value(t)) == pack(ref)
    tree = encode_value([t, 1, t])
    assert pack(tree) == pack(["list", ["shared", 0, ref], 1, ["ref", 0]])
    out = decode_value(tree)[0]
    assert type(out) is type(t) and out.dtype == t.dtype and out.shape == t.shape
    assert out.requires_grad == t.requires_grad
    if ref[3] is None:
        assert out.device.type == "meta"
    else:
        assert arrays.tensor_bytes(out.detach(), torch) == ref[3]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_tensor_nodes_match_the_reference():
    """Every dtype, shape, view, flag and wrapper encodes exactly as the general path did."""
    torch = pytest.importorskip("torch")
    dtypes = [d for d in _all_dtypes(torch) if not torch.empty(1, dtype=d).is_quantized]

    def grad_ok(dtype):
        try:
            torch.empty(1, dtype=dtype).requires_grad_()
            return True
        except RuntimeError:
            return False

    graddable = {d for d in dtypes if grad_ok(d)}
    views = ["plain", "offset", "transpose", "step", "expand", "conj", "neg"]

    @settings(max_examples=400, deadline=None, database=None)
    @given(st.sampled_from(dtypes), st.lists(st.integers(0, 4), max_size=3), st.sampled_from(views),
           st.sampled_from(["cpu", "meta"]), st.booleans(), st.booleans())
    def check(dtype, shape, view, device, grad, param):
        def rand(shape):
            t = _random_tensor(torch, dtype, shape)
            t = t.view(torch.uint8) % 2 == 1 if dtype == torch.bool else t
            return t.to(device)

        if view == "offset":
            t = rand((math.prod(shape) + 3,))[3:].reshape(shape)
        elif view == "step" and shape:
            t = rand(tuple(shape[:-1]) + (2 * shape[-1],))[..., ::2]
        elif view == "expand":
            t = rand([1] + shape).expand([3] + shape)
        else:
            t = rand(shape)
        if view == "transpose" and t.dim() >= 2:
            t = t.transpose(0, -1)
        if view == "conj" and dtype.is_complex:
            t = t.conj()
        if view == "neg" and (dtype.is_complex or dtype.is_floating_point) and dtype in graddable:
            t = torch._neg_view(t)
        if param:
            t = torch.nn.Parameter(t, requires_grad=grad and dtype in graddable)
        elif grad and dtype in graddable:
            t = t.detach().requires_grad_()
        _same_as_reference(t, torch)

    check()
    x = torch.randn(2, 3)
    with torch.inference_mode():
        inference = torch.randn(2, 3)

    class Sub(torch.Tensor):
        pass

    logits = torch.randn(1, 768)
    odd = [torch._efficientzerotensor(3), torch.ones(3, device="cpu:0"), inference, x.as_subclass(Sub),
           x.to_sparse(), torch.quantize_per_tensor(x, 0.1, 0, torch.qint8),
           torch.randn(3, dtype=torch.complex64).conj().imag, logits[:, -1], logits.bfloat16()[:, -1]]
    for t in odd:
        _same_as_reference(t, torch)


# -- numpy -------------------------------------------------------------------------------


def test_numpy_arrays():
    np = pytest.importorskip("numpy")
    dtypes = ["?", "i1", "i2", "<i4", ">i8", "u1", "u2", "u4", "u8", "f2", "f4", ">f8", "g", "c8", "c16", "G",
              "S5", "U3", "V4", "M8[ns]", "m8[s]", [("a", "<i4"), ("b", "f8", (2,)), ("c", "S2")]]
    rng = np.random.default_rng(0)
    for dt in dtypes:
        dt = np.dtype(dt)
        a = np.frombuffer(rng.bytes(dt.itemsize * 12), dtype=dt).reshape(3, 4)
        out = roundtrip(a)
        assert out.dtype == dt and out.shape == a.shape and out.tobytes() == a.tobytes(), dt
        assert out.flags.writeable
    t = np.arange(12.0).reshape(3, 4).T
    assert np.array_equal(roundtrip(t), t)
    assert roundtrip(np.float32(1.5)) == np.float32(1.5) and type(roundtrip(np.int8(3))) is np.int8
    assert roundtrip(np.dtype(">i2")) == np.dtype(">i2")
    with pytest.raises(UnencodableValueError, match="object"):
        encode_value(np.array([object()]))
