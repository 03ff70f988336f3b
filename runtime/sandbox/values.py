"""Values crossing the sandbox boundary: a small, strict node format (never pickle).

Atoms (None, bool, int64, float, str) travel as themselves; everything else is
a list whose first item says what it is::

    ["l", *items]  ["t", *items]  ["d", [key, value], ...]       list, tuple, dict (atom keys)
    ["M", "module:Qualname", [key, value], ...]                    a transformers ModelOutput
    ["x", value_tree]      a tensor, dtype, device or Size (compiler/ir/values: dtype from the
                           fixed table, sizes checked before allocation)
    ["s", k, value_tree]   model -> sandbox: the model process's tensor number k
    ["s", k, ["A", dtype, shape, offset]]   the same, its bytes in the job's arena (:mod:`.arena`)
    ["r", k, value_tree | None | "A"]   sandbox -> model: tensor k again; None: unchanged; "A": changed
                           in place in the arena; else its new contents (an in-place edit is copied
                           back into the model's own tensor)
    ["A", dtype, shape, offset]   sandbox -> model: a new tensor the sandbox wrote into its arena half
    ["o", h, "TypeName"]   an object of the model process that cannot cross (a KV cache, ...):
                           the sandbox holds a :class:`HostedObject` it can only hand back (also in
                           its result: :mod:`.results`)

Handles are per job: the tables live in this job's :class:`HostSide` and go with it. A hosted
object's handle ``h`` is a random per-job base plus its index, so a handle from another job, an
earlier one or a guess is refused, not taken for one of this job's objects.

The model process decodes what the sandbox sends with :class:`HostSide` (bounds on
depth, node count, handle numbers; ModelOutput classes only those it sent itself;
no tensor that requires grad; no copy into the hosted weights). The sandbox child
decodes what the model process sends with :class:`SandboxSide`.
"""
import math
import secrets
from typing import Any, Dict, List, Optional, Set

import torch

from compiler.ir.limits import DecodeLimits
from compiler.ir.values import decode_value, encode_value
from compiler.ir.values.arrays import torch_dtype

MAX_DEPTH = 64
MAX_NODES = 1_000_000
MAX_HANDLES = 1_000_000  # tensors + hosted objects one job may see
_HANDLE_BASE_BITS = 40  # a hosted object's handle: random base (per job) << 20, plus its index
HOSTED = "hosted"  # a handle in a result: ["objref", ["hosted", h]]
_INT64 = (-(1 << 63), (1 << 63) - 1)


class BoundaryError(Exception):
    """A value cannot cross the sandbox boundary (or arrived malformed)."""


class HostedObject:
    """Stands in the sandbox for an object of the model process that cannot cross (a KV cache, a
    model config object, ...). It can be handed back to the model (unchanged) and nothing else."""

    __slots__ = ("_handle", "_type")

    def __init__(self, handle: int, type_name: str) -> None:
        object.__setattr__(self, "_handle", handle)
        object.__setattr__(self, "_type", type_name)

    def __repr__(self) -> str:
        return "<hosted %s: stays in the model process (untrusted tier)>" % self._type

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            "%r has no attribute %r here: in the untrusted tier a %s of the hosted model stays in the model's "
            "process; your code can pass it on unchanged but not read or change it" % (self, name, self._type))

    def __setattr__(self, name: str, value: Any) -> None:
        self.__getattr__(name)


def hosted_reference(obj: Any) -> Optional[list]:
    """The sandbox's ``objref`` hook for its result: a HostedObject is written as its handle,
    ``["objref", ["hosted", h]]``, which only the model process can fill in (:mod:`.results`)."""
    if type(obj) is HostedObject:
        return [HOSTED, object.__getattribute__(obj, "_handle")]
    return None


def _is_atom(x: Any) -> bool:
    t = type(x)
    if t is int:
        return _INT64[0] <= x <= _INT64[1]
    return x is None or t is bool or t is str or (t is float and math.isfinite(x))


def _model_output_base():
    try:
        from transformers.utils import ModelOutput
    except Exception:  # transformers not installed: no ModelOutput can cross
        return None
    return ModelOutput


def _qualified(cls: type) -> str:
    return "%s:%s" % (cls.__module__, cls.__qualname__)


def _new_output(cls: type, pairs: List[Any]) -> Any:
    """A ModelOutput instance without running its ``__init__`` (keys set through ``__setitem__``)."""
    obj = cls.__new__(cls)
    for field in getattr(cls, "__dataclass_fields__", {}):  # fields absent from the keys are None
        object.__setattr__(obj, field, None)
    for key, value in pairs:
        obj[key] = value
    return obj


class _Walk:
    def __init__(self) -> None:
        self.nodes = 0

    def count(self, depth: int) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise BoundaryError("a value crossing the sandbox boundary has more than %d parts" % MAX_NODES)
        if depth > MAX_DEPTH:
            raise BoundaryError("a value crossing the sandbox boundary is nested deeper than %d" % MAX_DEPTH)


def _plain(value: Any) -> Any:
    try:
        return encode_value(value, where="a value crossing the sandbox boundary")
    except Exception as error:
        raise BoundaryError(str(error)) from None


class HostSide:
    """The model process's end: exports its values to the sandbox, imports the sandbox's answers."""

    def __init__(self, limits: DecodeLimits, protected_storage: Set[int], arena: Any = None) -> None:
        self.limits = limits
        self.protected = protected_storage  # data pointers of the hosted weights' storages
        self.arena = arena
        self.tensors: List[torch.Tensor] = []
        self.slots: Dict[int, torch.Tensor] = {}  # tensor number -> its copy in the arena
        self.objects: List[Any] = []  # this job's hosted objects; handle = object_base + index
        self.object_base = secrets.randbits(_HANDLE_BASE_BITS) << 20
        self._object_ids: Dict[int, int] = {}
        self.outputs: Dict[str, type] = {}  # ModelOutput classes this job was sent

    # -- to the sandbox
    def export(self, value: Any) -> Any:
        return self._export(value, 0, _Walk())

    def _export(self, value: Any, depth: int, walk: _Walk) -> Any:
        walk.count(depth)
        if _is_atom(value):
            return value
        t = type(value)
        if isinstance(value, torch.Tensor) and (t is torch.Tensor or t is torch.nn.Parameter):
            if len(self.tensors) >= MAX_HANDLES:
                raise BoundaryError("this job passed more than %d values across the sandbox boundary" % MAX_HANDLES)
            self.tensors.append(value)
            k = len(self.tensors) - 1
            placed = self.arena.put(value) if self.arena is not None and value.device.type == "cpu" else None
            if placed is not None:
                self.slots[k] = placed[3]
                return ["s", k, ["A", placed[0], placed[1], placed[2]]]
            return ["s", k, _plain(value.detach())]
        if t is tuple or t is list:
            return ["t" if t is tuple else "l"] + [self._export(v, depth + 1, walk) for v in value]
        base = _model_output_base()
        if base is not None and isinstance(value, base):
            self.outputs[_qualified(t)] = t
            return ["M", _qualified(t)] + [[k, self._export(v, depth + 1, walk)] for k, v in value.items()]
        if t is dict and all(_is_atom(k) for k in value):
            return ["d"] + [[k, self._export(v, depth + 1, walk)] for k, v in value.items()]
        if isinstance(value, (torch.dtype, torch.device, torch.Size)):
            return ["x", _plain(value)]
        k = self._object_ids.get(id(value))
        if k is None:
            if len(self.objects) >= MAX_HANDLES:
                raise BoundaryError("this job passed more than %d objects across the sandbox boundary" % MAX_HANDLES)
            self.objects.append(value)
            k = self._object_ids[id(value)] = len(self.objects) - 1
        return ["o", self.object_base + k, t.__name__]

    # -- from the sandbox (attacker-written)
    def load(self, node: Any) -> Any:
        return self._load(node, 0, _Walk())

    def _load(self, node: Any, depth: int, walk: _Walk) -> Any:
        walk.count(depth)
        if _is_atom(node):
            return node
        if type(node) is not list or not node or type(node[0]) is not str:
            raise BoundaryError("malformed value from the sandbox")
        tag = node[0]
        if tag == "l" or tag == "t":
            items = [self._load(x, depth + 1, walk) for x in node[1:]]
            return items if tag == "l" else tuple(items)
        if tag == "d" or tag == "M":
            start = 1 if tag == "d" else 2
            pairs = []
            for pair in node[start:]:
                if type(pair) is not list or len(pair) != 2 or not _is_atom(pair[0]):
                    raise BoundaryError("malformed mapping from the sandbox")
                pairs.append((pair[0], self._load(pair[1], depth + 1, walk)))
            if tag == "d":
                return dict(pairs)
            cls = self.outputs.get(node[1]) if type(node[1]) is str else None
            if cls is None:
                raise BoundaryError("the sandbox sent a model output of a class this job was never sent")
            return _new_output(cls, pairs)
        if tag == "x" and len(node) == 2:
            value = self._decode(node[1])
            if isinstance(value, torch.Tensor) and type(value) is not torch.Tensor:
                raise BoundaryError("only plain tensors cross into the model process")
            if not isinstance(value, (torch.Tensor, torch.dtype, torch.device, torch.Size)):
                raise BoundaryError("the sandbox sent an unexpected value")
            return value
        if tag == "A" and len(node) == 4 and self.arena is not None:
            try:
                return self.arena.read(node[1], node[2], node[3])
            except Exception as error:
                raise BoundaryError("a tensor from the sandbox's arena is malformed: %s" % error) from None
        if tag == "r" and len(node) == 3:
            original = self._handle(self.tensors, node[1])
            if node[2] is None:
                return original
            if node[2] == "A":
                new = self.slots.get(node[1])
                if new is None:
                    raise BoundaryError("the sandbox referred to an arena copy the model process never made")
            else:
                new = self._decode(node[2])
            if type(new) is not torch.Tensor or new.shape != original.shape or new.dtype != original.dtype:
                raise BoundaryError("the sandbox changed a tensor's shape or dtype in place")
            if original.untyped_storage().data_ptr() in self.protected:
                raise BoundaryError(
                    "in-place writes to the hosted model's weights are refused in the untrusted tier "
                    "(edit a copy, or apply the change to the module's output)")
            with torch.no_grad():
                original.copy_(new)
            return original
        if tag == "o" and len(node) == 3:
            return self.hosted(node[1])
        raise BoundaryError("the sandbox sent a value node %r this boundary does not know" % tag[:20])

    def _decode(self, tree: Any) -> Any:
        try:
            value = decode_value(tree, limits=self.limits)
        except Exception as error:
            raise BoundaryError("a value from the sandbox is malformed: %s" % error) from None
        if isinstance(value, torch.Tensor) and value.requires_grad:
            raise BoundaryError(
                "gradients cannot flow into the hosted model in the untrusted tier: a value sent to the model "
                "requires grad (backward passes through the hosted model need the trusted tier)")
        return value

    def hosted(self, handle: Any) -> Any:
        """This job's hosted object ``handle`` names; a handle it was never given (forged, another
        job's, a released one) is a :class:`BoundaryError`."""
        k = handle - self.object_base if type(handle) is int else -1
        if not 0 <= k < len(self.objects):
            raise BoundaryError("the sandbox named a hosted object this job was never sent (a forged handle, another "
                                "job's or a released one)")
        return self.objects[k]

    @staticmethod
    def _handle(table: List[Any], k: Any) -> Any:
        if type(k) is not int or not 0 <= k < len(table):
            raise BoundaryError("the sandbox referred to a value the model process never sent")
        return table[k]


class SandboxSide:
    """The sandbox child's end: imports the model process's values, exports its own answers."""

    def __init__(self, arena: Any = None) -> None:
        self.arena = arena
        self.received: Dict[int, Any] = {}  # id(tensor) -> (k, tensor, version when received, in arena)
        self.hosted: Dict[int, HostedObject] = {}  # one HostedObject per handle: identity kept, as in the model

    def load(self, node: Any) -> Any:
        if _is_atom(node):
            return node
        tag = node[0]
        if tag == "l":
            return [self.load(x) for x in node[1:]]
        if tag == "t":
            return tuple(self.load(x) for x in node[1:])
        if tag == "d":
            return {k: self.load(v) for k, v in node[1:]}
        if tag == "M":
            module, _, qual = node[1].partition(":")
            import sys

            cls: Any = sys.modules[module]
            for part in qual.split("."):
                cls = getattr(cls, part)
            return _new_output(cls, [(k, self.load(v)) for k, v in node[2:]])
        if tag == "x":
            return decode_value(node[1])
        if tag == "s":
            where = node[2]
            if type(where) is list and where and where[0] == "A":
                dtype = torch_dtype(where[1])
                numel = 1
                for d in where[2]:
                    numel *= d
                tensor = self.arena.view(dtype, where[2], where[3], numel * dtype.itemsize)  # no copy
                self.received[id(tensor)] = (node[1], tensor, tensor._version, True)
            else:
                tensor = decode_value(where)
                self.received[id(tensor)] = (node[1], tensor, tensor._version, False)
            return tensor
        if tag == "o":
            hosted = self.hosted.get(node[1])
            if hosted is None:
                hosted = self.hosted[node[1]] = HostedObject(node[1], node[2])
            return hosted
        raise BoundaryError("unknown value node %r from the model process" % (tag,))

    def export(self, value: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise BoundaryError("a value sent to the hosted model is nested deeper than %d" % MAX_DEPTH)
        if _is_atom(value):
            return value
        t = type(value)
        if isinstance(value, torch.Tensor):
            if value.requires_grad:
                raise BoundaryError(
                    "gradients cannot flow through the hosted model in the untrusted tier: a value that requires "
                    "grad was about to go back into the model (backward passes through the hosted model need an "
                    "API key of the trusted tier; gradients of your own computations on saved values work)")
            known = self.received.get(id(value))
            if known is not None and known[1] is value:
                if value._version == known[2]:
                    return ["r", known[0], None]
                return ["r", known[0], "A" if known[3] else _plain(value.detach())]
            if t is not torch.Tensor:
                value = value.as_subclass(torch.Tensor) if t is torch.nn.Parameter else value
            placed = self.arena.put(value) if self.arena is not None and value.device.type == "cpu" else None
            if placed is not None:
                return ["A", placed[0], placed[1], placed[2]]
            return ["x", _plain(value)]
        if isinstance(value, HostedObject):
            return ["o", value._handle, value._type]
        if t is tuple or t is list:
            return ["t" if t is tuple else "l"] + [self.export(v, depth + 1) for v in value]
        base = _model_output_base()
        if base is not None and isinstance(value, base):
            return ["M", _qualified(t)] + [[k, self.export(v, depth + 1)] for k, v in value.items()]
        if isinstance(value, dict) and all(_is_atom(k) for k in value):
            return ["d"] + [[k, self.export(v, depth + 1)] for k, v in value.items()]
        if isinstance(value, (torch.dtype, torch.device, torch.Size)):
            return ["x", _plain(value)]
        raise BoundaryError(
            "a %s cannot be sent to the hosted model from the untrusted tier's sandbox (values that cross are "
            "tensors, numbers, strings, tuples, lists, dicts and model outputs)" % t.__name__)
