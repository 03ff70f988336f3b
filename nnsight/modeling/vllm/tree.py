"""The module tree of the worker's model, described as plain data and rebuilt as stubs.

The user's process never loads the vLLM model: it asks a worker for the tree
(:func:`describe`, over ``collective_rpc``) and builds empty modules with the
same names, classes (by name) and ``extra_repr`` (:func:`build`), so envoys like
``model.model.layers[0].mlp`` exist and ``print(model)`` shows the real layout.
"""
from typing import List, Tuple

import torch

Row = Tuple[str, str, str]  # (dotted path below the root, class name, extra_repr)


def describe(module: torch.nn.Module) -> List[Row]:
    """Every module of ``module`` as ``(path, class name, extra_repr)``, parents first."""
    rows: List[Row] = []
    for path, sub in module.named_modules(remove_duplicate=False):
        try:
            extra = sub.extra_repr()
        except Exception:
            extra = ""
        rows.append((path, type(sub).__name__, extra))
    return rows


class Stub(torch.nn.Module):
    """A parameter-free stand-in for one module of the worker's model."""

    def __init__(self, name: str, extra: str = "") -> None:
        super().__init__()
        self._stub_name = name
        self._stub_extra = extra

    def _get_name(self) -> str:
        return self._stub_name

    def extra_repr(self) -> str:
        return self._stub_extra

    def forward(self, *args, **kwargs):
        raise RuntimeError(
            f"`{self._stub_name}` is a stand-in for a module that lives in the vLLM worker; it "
            f"can't run here. Use it inside `with model.trace(...)` to read or write its values.")


_classes = {}


def _stub(name: str, extra: str) -> Stub:
    """A stub whose class is named like the real one (``repr`` uses the class name)."""
    cls = _classes.get(name)
    if cls is None:
        cls = _classes[name] = type(name, (Stub,), {"__module__": __name__})
    return cls(name, extra)


def build(rows: List[Row]) -> Stub:
    """Rebuild a tree of :class:`Stub` modules from :func:`describe` rows."""
    root = None
    by_path = {}
    for path, name, extra in rows:
        stub = _stub(name, extra)
        if path == "":
            root = stub
        else:
            parent, _, child = path.rpartition(".")
            by_path[parent if parent else ""].add_module(child, stub)
        by_path[path] = stub
        if root is None:
            raise ValueError("the module tree must start with its root (path '')")
    return root
