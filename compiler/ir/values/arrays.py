"""Tensors and numpy arrays in value trees: encoding, and bounded decoding.

Decoding takes the dtype from a fixed table (torch's own dtype objects; numpy
dtypes without objects), checks the shape (non-negative ints, at most
``max_dims``), computes the byte size from dtype x shape and compares it with
``max_tensor_bytes`` and with the data actually sent -- all before any buffer
is made. torch and numpy are imported only when a value is one of theirs.
"""
from __future__ import annotations

from typing import Any, Dict, List

from ..errors import IRDecodeError
from ..limits import DecodeLimits
from .common import short_repr

_INT_OF_SIZE = {1: "uint8", 2: "int16", 4: "int32", 8: "int64"}
_NP_KINDS = "biufcmMSUV"  # no objects ("O"), no user-defined or variable-width string dtypes
_DESCR_DEPTH = 16  # nesting of structured numpy dtypes


class Reject(Exception):
    """Internal to the encoder: the current object cannot be encoded (reason in args[0])."""


# -- encoding ----------------------------------------------------------------------------------


def enc_torch(enc: Any, obj: Any, torch: Any) -> Any:
    cls = type(obj)
    if cls is torch.Tensor or cls is torch.nn.Parameter:
        return enc.register(obj, _plain_tensor_node(obj, cls, torch) or _tensor_node(obj, torch), leaf=True)
    if isinstance(obj, torch.Tensor):
        return enc.register(obj, _tensor_node(obj, torch))
    if isinstance(obj, torch.dtype):
        return ["dtype", _dtype_name(obj)]
    if isinstance(obj, torch.device):
        return ["device", str(obj)]
    if type(obj) is torch.Size:
        return ["size"] + [int(d) for d in obj]
    return None


def _dtype_name(dtype: Any) -> str:
    return str(dtype).split(".", 1)[1]


# dtypes whose CPU tensors numpy views as they are in memory: their bytes need no reinterpreting
_NUMPY_NATIVE = ("float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8", "bool",
                 "complex64", "complex128")
_PLAIN_DTYPES: Dict[Any, str] = {}  # dtype -> its name, for the dtypes above


def _plain_tensor_node(t: Any, cls: type, torch: Any) -> Any:
    """The node of a dense, contiguous CPU tensor of a numpy-native dtype -- nearly every result.

    The same node as :func:`_tensor_node` at a fraction of the torch calls (results often hold
    many small tensors); None for any other tensor, which takes the general path.
    """
    names = _PLAIN_DTYPES or _plain_dtypes(torch)
    name = names.get(t.dtype)
    if (name is None or not t.is_cpu or t.layout is not torch.strided or getattr(t, "is_nested", False)
            or not t.is_contiguous() or t.is_conj() or t.is_neg()):
        return None
    grad = t.requires_grad
    try:  # numpy refuses the rare odd tensor (a zero tensor, a functorch wrapper): general path
        data = (t.detach() if grad else t).numpy().tobytes()
    except Exception:
        return None
    return ["parameter" if cls is torch.nn.Parameter else "tensor", name, list(t.shape), data, grad, "cpu"]


def _plain_dtypes(torch: Any) -> Dict[Any, str]:
    for name in _NUMPY_NATIVE:
        dtype = vars(torch).get(name)
        if isinstance(dtype, torch.dtype):
            _PLAIN_DTYPES[dtype] = _dtype_name(dtype)
    return _PLAIN_DTYPES


def _tensor_node(t: Any, torch: Any) -> list:
    cls = type(t)
    if cls is torch.nn.Parameter:
        tag = "parameter"
    elif cls is torch.Tensor:
        tag = "tensor"
    else:
        raise Reject("tensor subclasses other than nn.Parameter are not supported")
    if t.is_quantized:
        raise Reject("quantized tensors are not supported (dequantize() it first)")
    if t.layout != torch.strided or getattr(t, "is_nested", False):
        raise Reject("only dense (strided) tensors are supported, not layout %s" % t.layout)
    device = str(t.device)
    shape = [int(d) for d in t.shape]
    data = None if t.device.type == "meta" else tensor_bytes(t.detach(), torch)
    return [tag, _dtype_name(t.dtype), shape, data, bool(t.requires_grad), device]


def tensor_bytes(t: Any, torch: Any) -> bytes:
    """The raw bytes of a tensor, C order (what a ``tensor`` node carries)."""
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    same_size = _INT_OF_SIZE.get(t.element_size())
    if same_size is not None:  # reinterpret as a plain integer type: copies work for every dtype
        t = t.view(getattr(torch, same_size))
    t = t.cpu().contiguous().reshape(-1)
    if t.stride(0) != 1:  # 0 or 1 items: contiguous whatever the stride, but view() needs stride 1
        t = t.clone(memory_format=torch.contiguous_format)
    return t.view(torch.uint8).numpy().tobytes()


def enc_numpy(enc: Any, obj: Any, np: Any) -> Any:
    if type(obj) is np.ndarray:
        descr = _np_descr(obj.dtype, np)
        return enc.register(obj, ["ndarray", descr, [int(d) for d in obj.shape], obj.tobytes()])
    if isinstance(obj, np.generic):
        arr = np.asarray(obj)
        return ["npscalar", _np_descr(arr.dtype, np), arr.tobytes()]
    if isinstance(obj, np.dtype):
        return ["npdtype", _np_descr(obj, np)]
    return None


def _np_descr(dtype: Any, np: Any) -> Any:
    if dtype.hasobject or dtype.kind not in _NP_KINDS:
        raise Reject("numpy dtype %s is not supported (object and custom dtypes cannot be captured)" % dtype)
    return _descr_tree(np.lib.format.dtype_to_descr(dtype))


def _descr_tree(d: Any) -> Any:
    if isinstance(d, str):
        return d
    if isinstance(d, (list, tuple)):
        return [_descr_tree(x) for x in d]
    if isinstance(d, int):
        return d
    raise Reject("unsupported numpy dtype description %s" % short_repr(d))


# -- decoding ----------------------------------------------------------------------------------


def torch_dtype(name: Any) -> Any:
    """The torch dtype called ``name`` (``"float32"``...), from torch's fixed set of dtypes."""
    import torch

    table = _torch_dtypes(torch)
    dtype = table.get(name) if type(name) is str else None
    if dtype is None:
        raise IRDecodeError("value tree: unknown torch dtype %s (needs a newer torch?)" % short_repr(name))
    return dtype


_DTYPES: Dict[int, Dict[str, Any]] = {}


def _torch_dtypes(torch: Any) -> Dict[str, Any]:
    table = _DTYPES.get(id(torch))
    if table is None:  # read torch's namespace as a dict: never triggers its lazy __getattr__
        table = {k: v for k, v in vars(torch).items() if isinstance(v, torch.dtype)}
        _DTYPES[id(torch)] = table
    return table


def checked_shape(shape: Any, limits: DecodeLimits) -> List[int]:
    if type(shape) is not list:
        raise IRDecodeError("value tree: a shape must be a list of ints, got %s" % short_repr(shape))
    if len(shape) > limits.max_dims:
        raise limits.exceeded("max_dims", "shape %s" % short_repr(shape), len(shape))
    for d in shape:
        if type(d) is not int or d < 0:
            raise IRDecodeError("value tree: shape %s has a bad dimension %s (dimensions are ints >= 0)" % (
                short_repr(shape), short_repr(d)))
    return shape


def checked_nbytes(shape: List[int], itemsize: int, data: Any, what: str, limits: DecodeLimits) -> int:
    """dtype x shape in bytes, within ``max_tensor_bytes`` and equal to ``len(data)``."""
    numel = 1
    for d in shape:
        numel *= d
    nbytes = numel * itemsize
    if nbytes > limits.max_tensor_bytes or (itemsize == 0 and numel > limits.max_tensor_bytes):
        raise limits.exceeded("max_tensor_bytes", "%s of shape %s" % (what, short_repr(shape)),
                              "%d bytes" % nbytes)
    if data is not None and nbytes != len(data):
        raise IRDecodeError("value tree: %s of shape %s needs %d bytes, got %d" % (what, shape, nbytes, len(data)))
    return nbytes


def tensor_from(t: list, limits: DecodeLimits) -> Any:
    import torch

    tag, dtype_name, shape, data, requires_grad, device = t
    dtype = torch_dtype(dtype_name)
    shape = checked_shape(shape, limits)
    if type(requires_grad) is not bool or type(device) is not str:
        raise IRDecodeError("value tree: tensor node needs a bool requires_grad and a str device")
    if data is None:  # a meta tensor: a shape, nothing allocated
        numel = 1
        for d in shape:
            numel *= d
        if numel >= 1 << 62:
            raise IRDecodeError("value tree: meta tensor shape %s is out of range" % short_repr(shape))
        x = torch.empty(shape, dtype=dtype, device="meta")
    else:
        if type(data) is not bytes:
            raise IRDecodeError("value tree: tensor data must be bytes, got %s" % short_repr(data))
        checked_nbytes(shape, dtype.itemsize, data, "tensor of dtype %s" % dtype_name, limits)
        x = _tensor_from_bytes(torch, data, dtype, shape)
        if device != "cpu":
            try:  # device is a placement hint: keep the tensor on CPU if it is unavailable here
                x = x.to(device)
            except Exception:
                pass
    if tag == "parameter":
        return torch.nn.Parameter(x, requires_grad=requires_grad)
    if requires_grad:
        x.requires_grad_(True)
    return x


def _tensor_from_bytes(torch: Any, data: bytes, dtype: Any, shape: list) -> Any:
    if not data:
        return torch.empty(shape, dtype=dtype)
    flat = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    same_size = _INT_OF_SIZE.get(dtype.itemsize)
    if same_size is not None:
        flat = flat.view(getattr(torch, same_size)).view(dtype)
    else:
        flat = flat.view(dtype)
    return flat.reshape(shape)


def np_dtype(descr: Any, limits: DecodeLimits) -> Any:
    """A numpy dtype from its description; object, structured-with-object and custom dtypes refused."""
    import numpy as np

    spec = _descr_from_tree(descr, 0, limits)
    if isinstance(spec, str) and ("O" in spec or len(spec) > 64):
        raise IRDecodeError("value tree: numpy dtype %s is not allowed (object dtypes are never rebuilt)" %
                            short_repr(spec))
    dtype = np.lib.format.descr_to_dtype(spec)
    if dtype.hasobject or dtype.kind not in _NP_KINDS:
        raise IRDecodeError("value tree: numpy dtype %s is not allowed (object and custom dtypes are never "
                            "rebuilt)" % short_repr(str(dtype)))
    return dtype


def _descr_from_tree(d: Any, depth: int, limits: DecodeLimits) -> Any:
    if type(d) is str:
        return d
    if type(d) is not list or depth >= _DESCR_DEPTH:
        raise IRDecodeError("value tree: bad numpy dtype description %s" % short_repr(d))
    fields = []
    for f in d:
        if type(f) is not list or not 2 <= len(f) <= 3:
            raise IRDecodeError("value tree: bad numpy dtype field %s" % short_repr(f))
        name = f[0]
        if type(name) is list:
            if len(name) != 2 or not all(type(n) is str for n in name):
                raise IRDecodeError("value tree: bad numpy field name %s" % short_repr(name))
            name = tuple(name)
        elif type(name) is not str:
            raise IRDecodeError("value tree: bad numpy field name %s" % short_repr(name))
        field: tuple = (name, _descr_from_tree(f[1], depth + 1, limits))
        if len(f) > 2:
            field += (tuple(checked_shape(f[2], limits)),)
        fields.append(field)
    return fields


def ndarray_from(descr: Any, shape: Any, data: Any, limits: DecodeLimits) -> Any:
    import numpy as np

    dtype = np_dtype(descr, limits)
    shape = checked_shape(shape, limits)
    if type(data) is not bytes:
        raise IRDecodeError("value tree: array data must be bytes, got %s" % short_repr(data))
    checked_nbytes(shape, dtype.itemsize, data, "array of dtype %s" % dtype, limits)
    if not data or dtype.itemsize == 0:
        return np.zeros(shape, dtype=dtype)
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
