"""``tracer.cache(...)``: record module activations during a trace.

    with model.trace("Hello") as tracer:
        cache = tracer.cache()                         # every module's output
    cache["model.transformer.h.0"].output              # by path
    cache.model.transformer.h[0].output                # by attribute

A cache is an observer on the interleaver: every provider value that passes
(after the interventions of that provider ran) is offered to it, narrowed to
the batch rows of the invoke that created it (a cache made outside any invoke
sees the whole batch). Options: ``modules=[envoy or path, ...]`` (default:
all), ``include_output`` (default True), ``include_inputs`` (default False),
``detach`` (default True), ``device`` / ``dtype`` / ``non_blocking`` (move or
convert tensors, as ``tensor.to`` does).

A module called once has one entry, and ``.output`` / ``.inputs`` / ``.input``
are its values; a module called several times (generation) has one entry per
call and those properties return lists (in call order), whatever the values
(a module returning ``None`` three times has three entries). The cache is saved
automatically: it is available after the trace without ``.save()``.

Navigation follows the envoy tree, so ``rename=`` aliases reach the same
entries (``cache.layers[0]`` for ``cache.model.transformer.h[0]``).
"""
from typing import Any, Dict, List, Optional, Tuple

import torch

from runtime import saves
from runtime.batcher import _map
from runtime.mediator import current_mediator


class Entry:
    """One call of a module: its output and/or its ``(args, kwargs)`` inputs."""

    __slots__ = ("output", "inputs", "has_output")

    def __init__(self, output: Any = None, inputs: Any = None, has_output: bool = False) -> None:
        self.output = output
        self.inputs = inputs
        self.has_output = has_output  # an output of None is an output

    @property
    def input(self) -> Any:
        if self.inputs is None:
            return None
        args, kwargs = self.inputs
        values = list(args) + list(kwargs.values())
        return values[0] if values else None

    def __repr__(self) -> str:
        return f"Entry(output={_short(self.output)}, inputs={_short(self.inputs)})"


def _short(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"Tensor{tuple(value.shape)}"
    return type(value).__name__


class Cache:
    """Recorded activations: ``entries[module_path]`` is a list of :class:`Entry`, one per call."""

    def __init__(self, model, modules=None, include_output: bool = True, include_inputs: bool = False,
                 detach: bool = True, device: Optional[torch.device] = None,
                 dtype: Optional[torch.dtype] = None, non_blocking: bool = False) -> None:
        self.model = model
        self.targets = None if modules is None else {_target_path(model, m) for m in modules}
        self.include_output = include_output
        self.include_inputs = include_inputs
        self.detach = detach
        self.device = device
        self.dtype = dtype
        self.non_blocking = non_blocking
        self.entries: Dict[str, List[Entry]] = {}

    def wants(self, key: str) -> Optional[Tuple[str, str]]:
        if key.endswith(".output"):
            if not self.include_output:
                return None
            path, slot = key[:-7], "output"
        elif key.endswith(".input"):
            if not self.include_inputs:
                return None
            path, slot = key[:-6], "inputs"
        else:
            return None
        if self.targets is not None and path not in self.targets:
            return None
        return path, slot

    def add(self, key: str, value: Any) -> None:
        wanted = self.wants(key)
        if wanted is None:
            return
        path, slot = wanted
        value = self._transform(value)
        entries = self.entries.setdefault(path, [])
        # A call's input comes before its output: an output completes the entry its input began.
        if slot == "output":
            if entries and entries[-1].inputs is not None and not entries[-1].has_output:
                entries[-1].output = value
                entries[-1].has_output = True
            else:
                entries.append(Entry(output=value, has_output=True))
        else:
            entries.append(Entry(inputs=value))

    def _transform(self, value: Any) -> Any:
        def fn(t: torch.Tensor) -> torch.Tensor:
            if self.detach:
                t = t.detach()
            if self.device is not None or self.dtype is not None:
                t = t.to(device=self.device, dtype=self.dtype, non_blocking=self.non_blocking)
            return t

        return _map(value, fn)


class NotCachedError(KeyError, AttributeError):
    """A path the cache holds nothing under: a ``KeyError`` for ``cache["path"]`` (what
    ``except KeyError`` around a lookup expects), an ``AttributeError`` for ``cache.path`` (so
    ``hasattr`` and ``getattr(cache, name, default)`` work)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _summary(paths, shown: int = 6) -> str:
    paths = list(paths)
    if not paths:
        return "nothing"
    more = f", ... ({len(paths) - shown} more)" if len(paths) > shown else ""
    return ", ".join(paths[:shown]) + more


class CacheView:
    """Navigate a :class:`Cache` by path (``view["model.transformer.h.0"]``) or attribute."""

    __slots__ = ("_cache", "_path")

    def __init__(self, cache: Cache, path: Optional[str] = None) -> None:
        object.__setattr__(self, "_cache", cache)
        object.__setattr__(self, "_path", path)

    # ------------------------------------------------------------------ values

    def _entries(self) -> List[Entry]:
        path = self._path
        if path is None:
            raise AttributeError("The cache root is not a module: select one, e.g. `cache.model.transformer.h[0]`.")
        entries = self._cache.entries.get(path)
        if entries is None:
            raise NotCachedError(
                f"{path!r} was not cached (cached: {_summary(self._cache.entries)}).")
        return entries

    def _values(self, slot: str) -> Any:
        values = [getattr(e, slot) for e in self._entries()]
        return values[0] if len(values) == 1 else values

    @property
    def output(self) -> Any:
        return self._values("output")

    @property
    def inputs(self) -> Any:
        return self._values("inputs")

    @property
    def input(self) -> Any:
        return self._values("input")

    @property
    def entries(self) -> List[Entry]:
        return list(self._entries())

    # -------------------------------------------------------------- navigation

    def _child(self, name: str) -> "CacheView":
        root = self._cache.model
        if self._path is None and name == root.path:
            path = root.path
        else:
            # Through the envoy tree, so aliases (`rename=`) lead to the module's own path.
            parent = root if self._path is None else _envoy_at(root, self._path)
            child = _envoy_child(parent, name) if parent is not None else None
            if child is not None:
                path = child.path
            elif self._path is None:
                path = f"{root.path}.{name}"  # short form: cache.transformer.h[0]
            else:
                path = f"{self._path}.{name}"
        if not any(k == path or k.startswith(path + ".") for k in self._cache.entries):
            raise NotCachedError(
                f"Nothing under {path!r} was cached (cached: {_summary(self._cache.entries)}).")
        return CacheView(self._cache, path)

    def __getattr__(self, name: str) -> "CacheView":
        if name.startswith("_"):
            raise AttributeError(name)
        return self._child(name)

    def __getitem__(self, key) -> "CacheView":
        if isinstance(key, int):
            if self._path is None:
                raise KeyError(key)
            prefix = self._path + "."
            names = []
            for k in self._cache.entries:
                if k.startswith(prefix):
                    head = k[len(prefix):].split(".", 1)[0]
                    if head not in names:
                        names.append(head)
            if key in range(-len(names), len(names)) and all(n.isdigit() for n in names):
                names.sort(key=int)
                return CacheView(self._cache, prefix + names[key])
            return self._child(str(key))
        if key in self._cache.entries:
            return CacheView(self._cache, key)
        view = self if self._path is not None else CacheView(self._cache)
        for part in key.split("."):
            view = view[int(part)] if part.lstrip("-").isdigit() else view._child(part)
        return view

    def __contains__(self, key: str) -> bool:
        try:
            return self[key]._path in self._cache.entries
        except (KeyError, AttributeError):
            return False

    def keys(self) -> List[str]:
        prefix = self._path
        return [k for k in self._cache.entries if prefix is None or k == prefix or k.startswith(prefix + ".")]

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._entries()) if self._path is not None else len(self._cache.entries)

    def __repr__(self) -> str:
        return f"CacheView({self._path or 'root'}, {len(self.keys())} cached modules)"


def _target_path(root, module) -> str:
    """The path ``modules=[...]`` means: an envoy's, or a string's through the envoy tree (aliases too)."""
    if not isinstance(module, str):
        return module.path
    envoy = _envoy_at(root, module)
    if envoy is None and not module.startswith(root.path + "."):
        envoy = _envoy_at(root, f"{root.path}.{module}")
    return envoy.path if envoy is not None else module


def _envoy_at(root, path: str):
    """The envoy whose path is ``path`` (a real path, as the cache keys are), or None."""
    if path == root.path:
        return root
    if not path.startswith(root.path + "."):
        return None
    envoy = root
    for part in path[len(root.path) + 1:].split("."):
        envoy = _envoy_child(envoy, part)
        if envoy is None:
            return None
    return envoy


def _envoy_child(envoy, name: str):
    """``envoy``'s child called ``name``: a module name, a ``rename=`` alias or a position."""
    children = envoy.__dict__.get("_children") or {}
    if name in children:
        return children[name]
    aliases = envoy.__dict__.get("_aliases") or {}
    if name in aliases:
        return aliases[name]
    if name.lstrip("-").isdigit() and -len(children) <= int(name) < len(children):
        return list(children.values())[int(name)]
    return None


class CacheMixin:
    """``tracer.cache(...)``."""

    def cache(self, modules=None, include_inputs: bool = False, include_output: bool = True,
              detach: bool = True, device=None, dtype=None, non_blocking: bool = False) -> CacheView:
        """Record module values (outputs by default) of this invoke, or of the whole batch."""
        model = self.model
        interleaver = model._interleaver
        cache = Cache(model, modules, include_output=include_output, include_inputs=include_inputs,
                      detach=detach, device=device, dtype=dtype, non_blocking=non_blocking)
        mediator = current_mediator()
        group = mediator.batch_group if mediator is not None else None
        # Outside an invoke (a trace body that collects invokes) the run hasn't started: the
        # registration waits on the idle interleaver and is dropped when that run stops.
        interleaver.caches.append((cache, group))
        view = CacheView(cache)
        saves.save(view)
        return view
