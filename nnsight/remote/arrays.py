"""Saved tensors on a client without torch: numpy arrays, or nested lists without numpy either.

A result's value tree holds tensors as ``["tensor", dtype, shape, data, requires_grad,
device]`` nodes (docs/ir.md). Without torch, :func:`tensors_as_arrays` rewrites them before
decoding: into ``["ndarray", descr, shape, data]`` nodes when numpy is importable (same
values, same shape; bfloat16 widens to float32, which holds every bfloat16 exactly), else
into nested ``list`` nodes of Python numbers. ``torch.Size`` becomes a tuple, a dtype or a
device its name. A meta tensor (what ``scan`` saves: a shape, no data) becomes a mapping
record of ``shape``, ``dtype`` and ``device``; an instance of a server class this client has
not loaded (a ``transformers`` key/value cache inside a ``ModelOutput``) a mapping record of
its fields. Mapping records whose class is not loaded here decode as
:class:`compiler.ir.values.MappingRecord` (a dict with attribute access). The rewrite only
turns data into data; the decoder still checks everything.
"""
import importlib.util
import struct
import sys
from typing import Any, Optional

# torch dtype name -> (numpy descr, struct format)
_DTYPES = {
    "float64": ("<f8", "d"), "float32": ("<f4", "f"), "float16": ("<f2", "e"),
    "int64": ("<i8", "q"), "int32": ("<i4", "i"), "int16": ("<i2", "h"), "int8": ("|i1", "b"),
    "uint8": ("|u1", "B"), "uint16": ("<u2", "H"), "uint32": ("<u4", "I"), "uint64": ("<u8", "Q"),
    "bool": ("|b1", "?"), "complex64": ("<c8", None), "complex128": ("<c16", None),
}


def importable(name: str) -> bool:
    """Can ``name`` be imported here (without importing it)?"""
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _bfloat16_as_float32(data: bytes) -> bytes:
    """Each bfloat16 is the top half of the float32 with the same value."""
    out = bytearray(len(data) * 2)
    out[2::4] = data[0::2]
    out[3::4] = data[1::2]
    return bytes(out)


def _is_tensor(node: Any) -> bool:
    return (isinstance(node, list) and len(node) == 6 and node[0] in ("tensor", "parameter")
            and isinstance(node[1], str) and isinstance(node[2], list))


def _array_node(node: list, numpy: bool) -> Any:
    _, dtype, shape, data, _, _ = node
    data = bytes(data or b"")
    if dtype == "bfloat16":
        dtype, data = "float32", _bfloat16_as_float32(data)
    if dtype not in _DTYPES:
        raise TypeError("a saved tensor has dtype %s, which this client cannot read without torch; "
                        "install torch, or convert it on the server (.float()) before saving" % dtype)
    descr, fmt = _DTYPES[dtype]
    if numpy:
        return ["ndarray", descr, list(shape), data]
    if fmt is None:
        raise TypeError("a saved %s tensor needs numpy or torch on this client" % dtype)
    values = list(struct.unpack("<%d%s" % (len(data) // struct.calcsize(fmt), fmt), data)) if data else []
    return _nest(values, list(shape))


def _nest(values: list, shape: list) -> Any:
    if not shape:
        return values[0] if values else 0
    if len(shape) == 1:
        return ["list"] + values
    step = 1
    for d in shape[1:]:
        step *= d
    return ["list"] + [_nest(values[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


# Nodes whose every item after the tag is a node; and after the tag and a reference.
_ITEMS = ("list", "tuple", "set", "frozenset")
_REF_ITEMS = ("namedtuple", "state")


def tensors_as_arrays(tree: Any, numpy: Optional[bool] = None) -> Any:
    """``tree`` with every tensor-related node rewritten for a client without torch."""
    if numpy is None:
        numpy = importable("numpy")
    return _walk(tree, numpy)


def _meta_record(node: list) -> Any:
    """A meta tensor's shape, dtype and device, as a mapping record's fields."""
    _, dtype, shape, _, _, device = node
    return ["mapping", "torch:Tensor", [], [["shape", ["tuple"] + list(shape)], ["dtype", dtype],
                                            ["device", device], ["ndim", len(shape)]]]


def _not_loaded(ref: Any) -> bool:
    return isinstance(ref, str) and ref.count(":") == 1 and sys.modules.get(ref.split(":")[0]) is None


def _pairs(items: Any, numpy: bool, keys: bool) -> Any:
    if not isinstance(items, list):
        return items
    return [[_walk(p[0], numpy) if keys else p[0], _walk(p[1], numpy)]
            if isinstance(p, list) and len(p) == 2 else p for p in items]


def _walk(node: Any, numpy: bool) -> Any:
    if not isinstance(node, list) or not node or not isinstance(node[0], str):
        return node  # an atom
    if _is_tensor(node):
        if node[5] == "meta" and node[3] is None:
            return _walk(_meta_record(node), numpy)
        return _array_node(node, numpy)
    tag = node[0]
    if tag == "size":
        return ["tuple"] + list(node[1:])
    if tag in ("dtype", "device") and len(node) == 2:
        return node[1]
    if tag in _ITEMS:
        return [tag] + [_walk(x, numpy) for x in node[1:]]
    if tag in _REF_ITEMS and len(node) >= 2:
        return node[:2] + [_walk(x, numpy) for x in node[2:]]
    if tag in ("dict", "odict"):
        return [tag] + [[_walk(k, numpy), _walk(v, numpy)] for k, v in node[1:]]
    if tag == "object" and len(node) == 4:
        if _not_loaded(node[1]) and isinstance(node[2], list) and isinstance(node[3], list):
            return ["mapping", node[1], [], _pairs(node[2] + node[3], numpy, False)]
        return [tag, node[1], _pairs(node[2], numpy, False), _pairs(node[3], numpy, False)]
    if tag == "mapping" and len(node) == 4:
        return [tag, node[1], _pairs(node[2], numpy, True), _pairs(node[3], numpy, False)]
    if tag == "shared" and len(node) == 3:
        return [tag, node[1], _walk(node[2], numpy)]
    if tag == "same" and len(node) == 3:
        return [tag, _walk(node[1], numpy), node[2]]
    return node
