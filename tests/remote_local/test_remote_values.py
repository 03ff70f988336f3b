"""Values travel to the server and back without pickle: every supported kind, sharing and cycles kept."""
import collections
import math

import numpy as np
import pytest
import torch

import nnsight


def through_server(model, x, value):
    """Send ``value`` into a remote='local' trace and save it back."""
    with model.trace(x, remote="local"):
        out = nnsight.save(value)
    return out


def raw(t):
    t = t.detach().contiguous()
    return t.reshape(-1).view(torch.uint8).tolist() if t.element_size() else []


def all_dtypes():
    seen = []
    for name in dir(torch):
        d = getattr(torch, name)
        if isinstance(d, torch.dtype) and d not in seen:
            seen.append(d)
    return seen


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_tensors_of_every_dtype(mlp, x):
    torch.manual_seed(0)
    tensors = {}
    for dtype in all_dtypes():
        try:
            if torch.empty(1, dtype=dtype).is_quantized:
                continue
            data = torch.randint(0, 256, (6 * dtype.itemsize,), dtype=torch.uint8)
            t = data.view(dtype).reshape(2, 3)
        except (RuntimeError, TypeError):
            continue  # dtypes that cannot be made on CPU at all
        if dtype == torch.bool:
            t = t.view(torch.uint8) % 2 == 1
        tensors[str(dtype)] = t
    assert "torch.bfloat16" in tensors and "torch.complex64" in tensors and "torch.uint16" in tensors
    out = through_server(mlp, x, tensors)
    assert out.keys() == tensors.keys()
    for name, t in tensors.items():
        assert out[name].dtype == t.dtype and out[name].shape == t.shape, name
        assert raw(out[name]) == raw(t), name


def test_tensor_layouts_and_flags(mlp, x):
    base = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    value = {
        "transposed": base.transpose(0, 2),
        "strided": base[:, ::2, 1:],
        "expanded": base[0, 0].expand(5, 4),
        "bf16": base.to(torch.bfloat16).transpose(1, 2),
        "grad": torch.ones(2, requires_grad=True),
        "param": torch.nn.Parameter(torch.ones(3)),
        "meta": torch.empty(4, 5, device="meta"),
        "scalar": torch.tensor(3.5),
        "empty": torch.empty(0, 3),
        "conj": torch.randn(2, 2, dtype=torch.complex64).conj(),
    }
    out = through_server(mlp, x, value)
    for k in ("transposed", "strided", "expanded", "bf16", "scalar", "empty"):
        assert torch.equal(out[k], value[k]), k
    assert torch.equal(out["conj"], value["conj"].resolve_conj())
    assert out["grad"].requires_grad and isinstance(out["param"], torch.nn.Parameter)
    assert out["meta"].device.type == "meta" and out["meta"].shape == (4, 5)


def test_python_values(mlp, x):
    value = [None, True, False, 0, -7, 2 ** 100, -(2 ** 70), 1.5, math.inf, -math.inf, 1 + 2j, "text ü",
             b"\x00\xff", bytearray(b"ab"), (1, (2, 3)), {"a": [1, {"b": 2}]}, {1, 2, 3}, frozenset({"x"}),
             slice(1, 10, 2), Ellipsis, range(2, 20, 3), collections.OrderedDict([("z", 1), ("a", 2)]),
             torch.float16, torch.device("cpu"), torch.Size([2, 3])]
    out = through_server(mlp, x, value)
    assert out == value and type(out[21]) is collections.OrderedDict
    nan = through_server(mlp, x, [math.nan])[0]
    assert math.isnan(nan)


def test_numpy_values(mlp, x):
    rng = np.random.default_rng(0)
    value = {"f32": rng.standard_normal((3, 4)).astype(np.float32), "i8": np.arange(6, dtype=">i8").reshape(2, 3),
             "t": np.arange(12.0).reshape(3, 4).T, "c": np.array([1 + 2j]), "s": np.array([b"ab", b"c"]),
             "scalar": np.float32(1.5), "dtype": np.dtype("<u2")}
    out = through_server(mlp, x, value)
    for k in ("f32", "i8", "t", "c", "s"):
        assert out[k].dtype == value[k].dtype and np.array_equal(out[k], value[k]), k
    assert out["scalar"] == value["scalar"] and type(out["scalar"]) is np.float32
    assert out["dtype"] == value["dtype"]


def test_shared_references_and_cycles(mlp, x):
    shared = [1, 2]
    cyclic = [0]
    cyclic.append(cyclic)
    d = {"self": None}
    d["self"] = d
    t = torch.ones(3)
    value = {"a": shared, "b": shared, "cyclic": cyclic, "d": d, "t1": t, "t2": t}
    out = through_server(mlp, x, value)
    assert out["a"] is out["b"] and out["a"] == [1, 2]
    assert out["cyclic"][1] is out["cyclic"] and out["d"]["self"] is out["d"]
    assert out["t1"] is out["t2"]


def test_user_classes_enums_and_dataclasses(mlp, x, mm):
    stats = mm.RunningStats()
    stats.add(torch.ones(2, 3))
    value = {"cfg": mm.SteerConfig(layer=2, mode=mm.Mode.MAX, tags=["t"]), "mode": mm.Mode.MEAN,
             "stats": stats, "shift": mm.ShiftDoubler(0.5), "cls": mm.Probe, "fn": mm.normalize,
             "probe": mm.Probe(3)}
    out = through_server(mlp, x, value)
    assert out["cfg"] == value["cfg"] and out["mode"] is mm.Mode.MEAN
    assert type(out["stats"]) is mm.RunningStats and out["stats"].count == 1
    assert torch.equal(out["stats"].mean, stats.mean)
    assert type(out["shift"]) is mm.ShiftDoubler and out["shift"].shift == 0.5
    assert out["cls"] is mm.Probe and out["fn"] is mm.normalize  # references come back as the client's objects
    assert torch.equal(out["probe"].linear.weight, value["probe"].linear.weight)
    assert out["probe"] is not value["probe"]  # a copy: the server's object, sent back


def test_saved_values_created_on_the_server(mlp, x, mm):
    with mlp.trace(x, remote="local"):
        h = mlp[1].output
        made = mm.RunningStats()
        made.add(h)
        made = made.save()
        cfg = mm.SteerConfig(scale=0.1, tags=["server"]).save()
        mode = nnsight.save(mm.Mode.MAX)
        layer = nnsight.save(mlp[1])
    assert type(made) is mm.RunningStats and made.count == 1
    assert cfg == mm.SteerConfig(scale=0.1, tags=["server"]) and mode is mm.Mode.MAX
    assert layer is mlp[1]  # an envoy of the model comes back as the client's envoy
