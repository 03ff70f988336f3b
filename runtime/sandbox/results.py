"""A sandboxed job's result that holds objects of the model process (the KV cache in ``model.output``).

The child never has those objects: it holds :class:`.values.HostedObject` handles. It
encodes its saved values with the result encoder of the trusted tier
(:func:`runtime.accept.saved_tree`), except that each handle is written as
``["objref", ["hosted", h]]`` (:func:`.values.hosted_reference`), and when it wrote
any, it sends that value tree (a ``DONE_HOSTED`` frame) instead of the result
bytes. The model process, which holds this job's objects, then:

* checks every handle against this job's table (:meth:`.values.HostSide.hosted`):
  a forged handle, another job's or a released one is a :class:`.values.BoundaryError`
  (the job fails; nothing of any object is written);
* encodes the objects, in the order the decoder will meet them, with the same
  data-only encoder and mapping records as the trusted tier (``shared`` ids numbered
  above the child's), refusing the hosted model's modules and weights;
* puts each at the first place its handle was and a reference to it at the others
  (a ``ModelOutput`` names its cache twice: as an item and as a field), and frames
  the result as the trusted tier does
  (:func:`compiler.ir.request.encode_result`). The worker checks the key's result
  size limit on these bytes, the filled-in objects included.

No object of the model process is ever sent to the child, and nothing is pickled.
"""
from typing import Any, Dict, List, Set, Tuple

import torch

from compiler.ir.errors import IRError, UnencodableValueError
from compiler.ir.request import encode_result
from compiler.ir.values import encode_value

from .values import HOSTED, BoundaryError, HostSide

_NONE = object()
_MAX_SHARED_ID = 1 << 62  # the child's ids must leave room for the model process's own


class HostedResultError(Exception):
    """A hosted object the job saved cannot be a result (the job's error, sent to its client)."""


def _hosted_handle(node: Any) -> Any:
    """``h`` if ``node`` is ``["objref", ["hosted", h]]``, else ``_NONE``."""
    if type(node) is list and len(node) == 2 and node[0] == "objref":
        ref = node[1]
        if type(ref) is list and len(ref) == 2 and ref[0] == HOSTED:
            return ref[1]
    return _NONE


def fill_hosted(tree: Any, side: HostSide, protected: Set[int]) -> bytes:
    """The result bytes of the child's saved-values ``tree`` with this job's hosted objects put in."""
    places: List[Tuple[list, int, Any]] = []  # (parent, index, handle), in the decoder's order
    top = [tree]
    most = -1  # the highest shared id of the child's tree
    nodes = 0
    stack: List[Tuple[list, int]] = [(top, 0)]
    while stack:
        parent, i = stack.pop()
        node = parent[i]
        nodes += 1
        if nodes > side.limits.max_items:  # (the bound the client's decoder applies to the whole tree)
            raise BoundaryError("the sandbox's result has more than %d parts" % side.limits.max_items)
        if type(node) is not list:
            continue
        handle = _hosted_handle(node)
        if handle is not _NONE:
            if i == 2 and len(parent) == 3 and parent[0] == "shared":  # (the encoder never shares a reference)
                raise BoundaryError("the sandbox's result shares a hosted object's handle")
            places.append((parent, i, handle))
            continue
        if len(node) == 3 and node[0] == "shared" and type(node[1]) is int:
            most = max(most, node[1])
        for j in range(len(node) - 1, -1, -1):  # pre-order, left to right: the decoder's order
            stack.append((node, j))
    if not places:
        return _framed(tree)
    if most >= _MAX_SHARED_ID:
        raise BoundaryError("the sandbox's result numbers its shared values out of range")
    # each handle's object is encoded once, at its first place; its other places refer back to it
    first: Dict[Any, int] = {}  # handle -> its index in objects
    count: List[int] = []
    objects: List[Any] = []
    for _, _, handle in places:
        obj = side.hosted(handle)  # a handle this job was never given is refused here
        k = first.get(handle)
        if k is None:
            first[handle] = len(objects)
            objects.append(obj)
            count.append(1)
        else:
            count[k] += 1
    wrap = most + 1  # ids most+1 .. most+len(objects): an object placed more than once, if its node is not shared
    encoded = _encode(objects, wrap + len(objects), protected)
    ids: Dict[int, int] = {}
    for parent, i, handle in places:
        k = first[handle]
        if k in ids:
            parent[i] = ["ref", ids[k]]
            continue
        node = encoded[k]
        if count[k] > 1:
            if type(node) is list and node and node[0] == "shared":
                ids[k] = node[1]
            else:
                ids[k] = wrap + k
                node = ["shared", wrap + k, node]
        else:
            ids[k] = -1  # (placed once: nothing refers to it)
        parent[i] = node
    return _framed(top[0])


def _framed(tree: Any) -> bytes:
    try:
        return encode_result(tree)
    except IRError as error:  # the child's part of the tree is not plain data
        raise BoundaryError("the sandbox's result is malformed: %s" % error) from None


def _encode(objects: List[Any], first_shared: int, protected: Set[int]) -> List[Any]:
    """The value trees of ``objects`` (one encoding: what they share stays shared)."""

    def refuse_weights(obj: Any) -> None:
        if isinstance(obj, torch.nn.Module):
            raise UnencodableValueError("a module of the hosted model cannot be a result in the untrusted tier")
        if isinstance(obj, torch.Tensor) and obj.device.type != "meta":
            try:
                storage = obj.untyped_storage().data_ptr()
            except Exception:  # noqa: BLE001 - a tensor without storage (sparse...): encoded as usual
                return None
            if storage in protected:
                raise UnencodableValueError("the hosted model's weights cannot be a result in the untrusted tier "
                                            "(reading weights needs a key of the trusted tier)")
        return None

    try:
        tree = encode_value(objects, where="the saved values (objects of the hosted model)", objref=refuse_weights,
                            records=True, first_shared=first_shared)
    except (UnencodableValueError, RecursionError) as error:
        raise HostedResultError(str(error) or "a saved object of the hosted model is nested too deeply") from None
    return tree[1:]  # (the list itself is new: never shared, so a plain "list" node)
