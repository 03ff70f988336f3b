"""The hosted model is intact after every job: snapshot before, check after, restore on a change.

A hosted model is shared by every request, so a job that changed it would change every later
job's results. The loader's guard refuses the routes it knows (writes to server objects, hook
registration, ``half()``...); this check is the second line, independent of how the change was
made. Before a job :func:`snapshot` records, in O(#tensors + #module attributes):

* every parameter and buffer of the model: the tensor object, its version counter
  (``Tensor._version``, moved by every in-place write autograd sees), ``data_ptr``, shape, dtype,
  device, ``requires_grad`` and whether it has a ``.grad``;
* every torch module's ``__dict__`` and the containers in it (``_parameters``, ``_buffers``,
  ``_modules``, the hook dictionaries), by identity: an attribute added, removed or rebound, a
  hook left behind, a submodule or parameter replaced;
* the model's config, generation config and tokenizer attributes;
* the server modules a request is given views of (the module table of
  ``compiler/data/server_access.json`` and their main submodules), the classes ``torch.Tensor``,
  ``torch.nn.Module`` and ``torch.nn.Parameter``, and torch's global module hooks: a name removed or
  rebound, or a ``__dunder__`` added (other names added are not checked: lazily imported modules
  add names to their packages, and libraries methods to ``nn.Module``, as they are first used);
* torch's process-wide settings: default dtype, thread count (the per-thread grad and anomaly
  modes are put back by the loader);
* torch's per-thread modes a job could enter and never leave, which would then act on every later
  job of the thread: the ``__torch_function__`` and ``__torch_dispatch__`` mode stacks, the
  saved-tensor hooks of autograd, autocast and inference mode. These are read (and popped) through
  torch's C-level accessors, as torch's own context managers do; they are checked and put back
  first, before any tensor is touched (a mode left active would see those calls).

After the job :meth:`Snapshot.changes` lists what differs; :meth:`Snapshot.restore` puts it back:
the same objects in the same dictionaries, and the values of changed tensors from the model's
own safetensors files (read through ``safetensors.safe_open``). A tensor the files do not hold
(a non-persistent buffer, an adapter's weight, a model built in memory) is restored from a
pristine copy taken before the model's first job, up to :data:`MAX_COPY_BYTES` in all
(:data:`LOCAL_COPY_BYTES` for ``remote='local'``, the user's own model): its memory cost is the
size of those tensors (a few KB of rotary buffers for a usual checkpoint; the whole
model for a checkpoint without safetensors files, within the cap). The job then fails with
:class:`IntegrityError`, naming what it changed.

What the check cannot see, a write to a weight's memory that bypasses autograd's version counter
(``w.data.zero_()``, a numpy array or DLPack capsule over the weight, ``w.untyped_storage()``), is
refused before it is made: the loader refuses every such alias of the hosted model's memory
(:mod:`runtime.loader.hosted_memory`); docs/security.md lists the routes and what remains.
"""
import json
import os
import sys
import weakref
from importlib import resources
from typing import Any, Dict, List, Optional, Tuple

from .identity_state import ClassState, DictState, FlatState, SetState

MAX_COPY_BYTES = 1 << 30  # pristine copies of tensors the weight files do not hold, per hosted model
LOCAL_COPY_BYTES = 16 << 20  # the same for remote='local' (the user's own model: buffers, not a second model)
MAX_LISTED = 8  # changes named in an IntegrityError's message

# Submodules of the server's modules whose names a request reaches most (and torch's module-hook
# registry); the table's top-level modules are added from compiler/data/server_access.json.
WATCHED_SUBMODULES = ("torch.nn", "torch.nn.functional", "torch.nn.init", "torch.nn.modules.module",
                      "torch.linalg", "torch.fft", "torch.special", "torch.autograd", "numpy.linalg",
                      "numpy.random", "numpy.fft", "math", "collections")
# Modules whose dictionary-valued globals are registries (torch's global module hooks): their
# contents are checked too.
REGISTRY_MODULES = ("torch.nn.modules.module",)



class IntegrityError(RuntimeError):
    """A job changed the hosted model or the server's modules; the change was undone (or not, as said)."""

    def __init__(self, message: str, changes: List[str], restored: bool) -> None:
        super().__init__(message)
        self.changes = changes
        self.restored = restored


def _table_modules() -> Tuple[str, ...]:
    text = (resources.files("compiler") / "data" / "server_access.json").read_text("utf-8")
    return tuple(json.loads(text)["modules"])


_WATCHED_NAMES = _table_modules() + WATCHED_SUBMODULES


# -- the model's restore source -----------------------------------------------------------------


class _Pristine:
    """Where a model's tensors are restored from: its safetensors files, else copies."""

    def __init__(self, root: Any, tensors: Dict[str, Any], budget: int) -> None:
        self.files: Dict[str, Tuple[str, str]] = {}  # tensor name -> (file, key in the file)
        self.copies: Dict[str, Any] = {}
        self.uncovered: List[str] = []  # neither in the files nor copied (over MAX_COPY_BYTES)
        self._find_files(root, tensors)
        for name, tensor in tensors.items():
            if name in self.files:
                continue
            size = tensor.numel() * tensor.element_size()
            if tensor.device.type != "meta" and size <= budget:
                self.copies[name] = tensor.detach().to("cpu", copy=True)
                budget -= size
            else:
                self.uncovered.append(name)

    def _find_files(self, root: Any, tensors: Dict[str, Any]) -> None:
        directory = _weights_directory(root)
        if directory is None:
            return
        try:
            from safetensors import safe_open
        except ImportError:
            return
        shapes: Dict[str, Tuple[str, tuple]] = {}
        for name in sorted(os.listdir(directory)):
            if not name.endswith(".safetensors"):
                continue
            path = os.path.join(directory, name)
            try:
                with safe_open(path, framework="pt", device="cpu") as f:
                    for key in f.keys():
                        shapes[key] = (path, tuple(f.get_slice(key).get_shape()))
            except Exception:  # noqa: BLE001 - an unreadable file only means: copy instead
                continue
        prefix = getattr(root, "base_model_prefix", "") or ""
        for name, tensor in tensors.items():
            candidates = [name]
            if prefix:
                candidates += [name[len(prefix) + 1:]] if name.startswith(prefix + ".") else [prefix + "." + name]
            for key in candidates:
                found = shapes.get(key)
                if found is not None and found[1] == tuple(tensor.shape):
                    self.files[name] = (found[0], key)
                    break

    def value(self, name: str) -> Optional[Any]:
        """The pristine value of tensor ``name`` (on the CPU), or None if it cannot be had."""
        if name in self.copies:
            return self.copies[name]
        found = self.files.get(name)
        if found is None:
            return None
        from safetensors import safe_open

        with safe_open(found[0], framework="pt", device="cpu") as f:
            return f.get_tensor(found[1])


def _weights_directory(root: Any) -> Optional[str]:
    """The directory of the model's weight files (a path, or its Hugging Face cache snapshot)."""
    source = getattr(root, "name_or_path", None) or getattr(getattr(root, "config", None), "_name_or_path", None)
    if not isinstance(source, str) or not source:
        return None
    if os.path.isdir(source):
        return source
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(source, local_files_only=True, allow_patterns=["*.safetensors", "*.json"])
    except Exception:  # noqa: BLE001 - not in the cache: copies instead
        return None


_CONTAINERS = (dict, set, __import__("collections").OrderedDict)
_STRUCTURE = {"_modules": "submodule", "_parameters": "parameter", "_buffers": "buffer"}


def root_module(model: Any) -> Any:
    """The torch module behind a hosted model (an nnsight envoy or the module itself)."""
    import torch

    if isinstance(model, torch.nn.Module):
        return model
    module = getattr(model, "__dict__", {}).get("_module")
    return module if isinstance(module, torch.nn.Module) else None


# -- the snapshot -------------------------------------------------------------------------------


class _TensorState:
    __slots__ = ("name", "tensor", "meta")

    def __init__(self, name: str, tensor: Any) -> None:
        self.name = name
        self.tensor = tensor
        self.meta = _tensor_meta(tensor)


def _tensor_meta(t: Any) -> tuple:
    try:
        version = t._version
    except RuntimeError:  # an inference-mode tensor has no version counter
        version = None
    return (version, t.data_ptr(), t.shape, t.dtype, t.device, t.requires_grad, t.grad is None)


class _Layout:
    """A model's modules, the containers in their ``__dict__`` and its tensors, found once per model.

    Walking the module tree costs more than checking it, so the walk is kept while every module's
    ``__dict__`` and children are as they were (checked by identity at each snapshot; else redone).
    """

    def __init__(self, root: Any, copy_budget: int) -> None:
        self.modules: List[Tuple[str, Any]] = []
        self.states: List[DictState] = []  # each module's __dict__
        self.containers: List[Tuple[Tuple[str, Any], ...]] = []  # its dicts and sets (hooks, children...)
        self.tensors: Dict[str, Any] = {}
        seen: set = set()
        for path, module in root.named_modules(remove_duplicate=False):
            d = module.__dict__
            self.modules.append((path, module))
            self.states.append(DictState(d))
            self.containers.append(tuple((k, v) for k, v in d.items() if type(v) in _CONTAINERS))
            for group in ("_parameters", "_buffers"):
                for key, tensor in d.get(group, {}).items():
                    if tensor is not None and id(tensor) not in seen:
                        seen.add(id(tensor))
                        self.tensors["%s.%s" % (path, key) if path else key] = tensor
        # each module's children, parameters and buffers (what the walk found)
        self.structure = [(path, key, DictState(m.__dict__[key])) for path, m in self.modules
                          for key in _STRUCTURE if isinstance(m.__dict__.get(key), dict) and m.__dict__[key]]
        # (an empty one is checked by its length, as every container is)
        self.bare = [tuple(c for _, c in containers) for containers in self.containers]
        self.all_containers = [c for containers in self.bare for c in containers]
        self.states_flat = FlatState(self.states)  # (the per-module states name what changed)
        self.structure_flat = FlatState([state for _, _, state in self.structure])
        self.pristine = _Pristine(root, self.tensors, copy_budget)

    def current(self) -> bool:
        return self.states_flat.same() and self.structure_flat.same()


# The layout (and restore source) of each model, made at its first snapshot (before any job ran on it).
_LAYOUTS: "weakref.WeakKeyDictionary[Any, _Layout]" = weakref.WeakKeyDictionary()


class Snapshot:
    """What a job must leave as it found it (see the module docstring)."""

    def __init__(self, model: Any, copy_budget: int = MAX_COPY_BYTES) -> None:
        import torch

        self.copy_budget = copy_budget
        self.root = root_module(model)
        self.grown = False  # set by changes(): a server module gained names since this snapshot
        self.layout: Optional[_Layout] = None
        self.lengths: List[tuple] = []  # per module: the length of each container
        self.contents: List[Tuple[str, str, Any]] = []  # (module path, key, state) of non-empty containers
        self.tensors: List[_TensorState] = []
        self.objects: List[Tuple[str, DictState]] = []  # config, generation config, tokenizer
        self.server_modules: List[Tuple[str, DictState]] = []
        self.registries: List[Tuple[str, DictState]] = []
        self.classes = [ClassState(cls) for cls in (torch.Tensor, torch.nn.Module, torch.nn.Parameter)]
        self.settings = _settings()
        self.modes = _thread_modes()
        if self.root is not None and not _on_meta(self.root):
            self._take_model(model)
        for name in _WATCHED_NAMES:
            module = sys.modules.get(name)
            if module is not None:
                self.server_modules.append((name, DictState(module.__dict__)))
        for name in REGISTRY_MODULES:
            module = sys.modules.get(name)
            for key, value in (vars(module).items() if module is not None else ()):
                if type(value) in _CONTAINERS and type(value) is not set:
                    self.registries.append(("%s.%s" % (name, key), DictState(value)))
        # one pass each over many dictionaries; the per-dictionary states say what changed
        self.shared_flat = FlatState([state for _, state in self.objects + self.server_modules + self.registries])

    def _take_model(self, model: Any) -> None:
        layout = _LAYOUTS.get(self.root)
        if layout is None or not layout.current():
            pristine = layout.pristine if layout is not None else None
            layout = _LAYOUTS[self.root] = _Layout(self.root, self.copy_budget)
            if pristine is not None:  # (the restore source stays the one made before the first job)
                layout.pristine = pristine
        self.layout = layout
        self.all_lengths = tuple(map(len, layout.all_containers))
        for (path, _), containers, bare in zip(layout.modules, layout.containers, layout.bare):
            self.lengths.append(tuple(map(len, bare)))
            for key, container in containers:
                if container and key not in _STRUCTURE:  # (those: the layout's own check)
                    state = SetState(container) if type(container) is set else DictState(container)
                    self.contents.append((path, key, state))
        self.tensors = [_TensorState(name, tensor) for name, tensor in layout.tensors.items()]
        for label, obj in (("config", getattr(self.root, "config", None)),
                           ("generation_config", getattr(self.root, "generation_config", None)),
                           ("tokenizer", getattr(model, "__dict__", {}).get("tokenizer"))):
            if obj is not None and hasattr(obj, "__dict__"):
                self.objects.append((label, DictState(obj.__dict__)))

    # -- after the job --------------------------------------------------------------------------

    def changes(self) -> List[str]:
        """What the job changed, one phrase each (empty: intact)."""
        found: List[str] = []
        modes = _thread_modes()
        if modes != self.modes:
            found += _mode_changes(self.modes, modes)
            _restore_modes(self.modes)  # now: a mode left active would intercept the checks below
        for state in self.tensors:
            now = _tensor_meta(state.tensor)
            if now != state.meta:
                found.append(_tensor_change(state, now))
        layout = self.layout
        if layout is not None and (not layout.states_flat.same()
                                   or tuple(map(len, layout.all_containers)) != self.all_lengths):
            for (path, _), state, containers, bare, lengths in zip(layout.modules, layout.states, layout.containers,
                                                                   layout.bare, self.lengths):
                where = "module %r" % (path or "<root>")
                if not state.same():
                    found += ["%s: attribute %r %s" % (where, key, what) for what, key in state.differences()]
                if tuple(map(len, bare)) != lengths:
                    found += ["%s: %s changed%s" % (where, key, " (a hook was left registered or removed)"
                                                    if "hook" in key else "")
                              for (key, c), n in zip(containers, lengths) if len(c) != n]
        if layout is not None:
            for path, key, state in self.contents:
                if not state.same():
                    found.append("module %r: %s changed" % (path or "<root>", key))
        if layout is not None and not layout.structure_flat.same():
            for path, key, state in layout.structure:
                if not state.same():
                    found += ["module %r: %s %r %s" % (path or "<root>", _STRUCTURE[key], name, what)
                              for what, name in state.differences()]
        if not self.shared_flat.same():
            found += self._shared_changes()
        for cls in self.classes:
            if not cls.same():
                found += ["class %s.%s: %r %s" % (cls.cls.__module__, cls.cls.__qualname__, key, what)
                          for what, key in cls.differences()]
        if _settings() != self.settings:
            found.append("torch's process-wide settings (default dtype or thread count)")
        return found

    def _shared_changes(self) -> List[str]:
        """What changed in the model's config objects, the server's modules and torch's registries."""
        found: List[str] = []
        for label, state in self.objects:
            if not state.same():
                found += ["the model's %s: %r %s" % (label, key, what) for what, key in state.differences()]
        for name, state in self.server_modules:
            if not state.same():
                self.grown = True  # (names a lazy import added: allowed, but this snapshot is now dated)
                found += ["server module %s: %r %s" % (name, key, what)
                          for what, key in state.differences(grown_ok=True)]
        for name, state in self.registries:
            if not state.same():
                found.append("%s changed (a global module hook was left registered or removed)" % name)
        return found

    def restore(self) -> List[str]:
        """Undo every change; returns the tensors that could not be restored (by name)."""
        import torch

        layout = self.layout
        if layout is not None:
            for state in layout.states:
                state.restore()
            for _, _, state in layout.structure:
                state.restore()
            for containers, lengths in zip(layout.containers, self.lengths):
                for (_, container), n in zip(containers, lengths):
                    if n == 0 and container:
                        container.clear()
            for _, _, state in self.contents:
                state.restore()
        for _, state in self.objects:
            state.restore()
        for _, state in self.server_modules:
            state.restore(grown_ok=True)
        for _, state in self.registries:
            state.restore()
        for cls in self.classes:
            if not cls.same():
                cls.restore()
        _apply_settings(self.settings)
        _restore_modes(self.modes)
        failed = []
        pristine = layout.pristine if layout is not None else None
        for state in self.tensors:
            if _tensor_meta(state.tensor) == state.meta:
                continue
            if not _restore_tensor(state, pristine, torch):
                failed.append(state.name)
        return failed


def _tensor_change(state: _TensorState, now: tuple) -> str:
    old = state.meta
    kind = "parameter" if state.tensor.__class__.__name__ == "Parameter" else "buffer"
    if now[2] != old[2] or now[3] != old[3] or now[4] != old[4] or now[1] != old[1]:
        what = "was replaced (its storage, shape, dtype or device changed)"
    elif now[0] != old[0]:
        what = "was written in place (its version counter moved from %s to %s)" % (old[0], now[0])
    elif now[5] != old[5]:
        what = "had requires_grad changed"
    else:
        what = "had its .grad set"
    return "%s %r %s" % (kind, state.name, what)


def _restore_tensor(state: _TensorState, pristine: Optional[_Pristine], torch: Any) -> bool:
    t, (_, ptr, shape, dtype, device, requires_grad, no_grad) = state.tensor, state.meta
    with torch.no_grad():
        if t.requires_grad != requires_grad:
            t.requires_grad_(requires_grad)
        if no_grad and t.grad is not None:
            t.grad = None
        value = pristine.value(state.name) if pristine is not None else None
        if value is None:
            return _tensor_meta(t) == state.meta
        if t.data_ptr() == ptr and t.shape == shape and t.dtype == dtype and t.device == device:
            t.copy_(value)
        else:
            t.data = value.to(device=device, dtype=dtype).reshape(shape)
    state.meta = _tensor_meta(t)  # the restored tensor is the new baseline of this snapshot
    return True


def _on_meta(root: Any) -> bool:
    """A model whose weights are not loaded yet (``remote='local'`` before its first trace)."""
    for tensor in root.parameters():
        return tensor.device.type == "meta"
    return False


def _settings() -> tuple:
    import torch

    return (torch.get_default_dtype(), torch.get_num_threads())


def _apply_settings(settings: tuple) -> None:
    import torch

    dtype, threads = settings
    if torch.get_default_dtype() != dtype:
        torch.set_default_dtype(dtype)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


_MODE_NAMES = ("a __torch_function__ mode", "a __torch_dispatch__ mode", "autograd's saved-tensor hooks",
               "autocast (cpu)", "autocast (cpu) dtype", "autocast (cuda)", "autocast (cuda) dtype", "inference mode")


def _thread_modes() -> tuple:
    """This thread's torch modes (see the module docstring)."""
    import torch

    c = torch._C
    hooks = c._autograd._top_saved_tensors_default_hooks(False)
    modes = [c._len_torch_function_stack(), c._len_torch_dispatch_stack(), id(hooks[0]) if hooks else None]
    for device in ("cpu", "cuda"):
        try:
            modes += [torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)]
        except Exception:  # noqa: BLE001 - a build without that device
            modes += [None, None]
    modes.append(torch.is_inference_mode_enabled())
    return tuple(modes)


def _mode_changes(before: tuple, now: tuple) -> List[str]:
    return ["the job left %s %s" % (name, "active" if i < 3 else "changed")
            for i, (name, old, new) in enumerate(zip(_MODE_NAMES, before, now)) if old != new]


def _restore_modes(before: tuple) -> None:
    """Pop what a job pushed and never popped; put autocast back."""
    import torch

    c = torch._C
    for _ in range(1000):
        if c._len_torch_function_stack() <= before[0]:
            break
        c._pop_torch_function_stack()
    for _ in range(1000):
        if c._len_torch_dispatch_stack() <= before[1]:
            break
        c._pop_torch_dispatch_stack()
    for _ in range(1000):
        hooks = c._autograd._top_saved_tensors_default_hooks(False)
        if (id(hooks[0]) if hooks else None) == before[2] or hooks is None:
            break
        c._autograd._pop_saved_tensors_default_hooks()
    for i, device in ((3, "cpu"), (5, "cuda")):
        if before[i] is None:
            continue
        if torch.is_autocast_enabled(device) != before[i]:
            torch.set_autocast_enabled(device, before[i])
        if torch.get_autocast_dtype(device) != before[i + 1]:
            torch.set_autocast_dtype(device, before[i + 1])


class _Undone:
    """How many times this process undid a job's changes (a snapshot taken before is dated)."""

    count = 0


def undone_count() -> int:
    return _Undone.count


def snapshot(model: Any, copy_budget: int = MAX_COPY_BYTES) -> Snapshot:
    """What ``model`` and the server's modules are before a job (``copy_budget``: bytes of pristine
    copies the model's first snapshot may make of tensors its weight files do not hold)."""
    return Snapshot(model, copy_budget)


def enforce(before: Snapshot) -> None:
    """After a job: raise :class:`IntegrityError` naming what the job changed, once undone."""
    changes = before.changes()
    if not changes:
        return
    _Undone.count += 1
    failed = before.restore()
    left = before.changes()
    restored = not failed and not left
    shown = "; ".join(changes[:MAX_LISTED]) + ("; and %d more" % (len(changes) - MAX_LISTED)
                                                if len(changes) > MAX_LISTED else "")
    if restored:
        tail = ("The job failed and the change was undone (changed weights reloaded from the model's files). A "
                "request may read the hosted model but not change it: modify a copy (`w = layer.weight.clone()`) "
                "or activations inside the trace, and leave every `with` block you enter")
    else:
        tail = ("The change could NOT be fully undone (%s): the server operator must restart the server"
                % "; ".join((["no pristine value of " + ", ".join(failed[:MAX_LISTED])] if failed else [])
                            + left[:MAX_LISTED]))
    raise IntegrityError("the job changed what every request shares (the hosted model, the server's modules, "
                         "torch's modes): %s. %s" % (shown, tail),
                         changes, restored)
