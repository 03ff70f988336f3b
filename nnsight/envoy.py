"""Envoy: a proxy over a ``torch.nn.Module`` that gives access to its values inside a trace.

``model.transformer.h[0]`` is an Envoy wrapping the first GPT-2 block; its
``.output``, ``.input`` and ``.inputs`` ask the running intervention's mediator
for the module's values. Other attributes fall through to the
module.
"""
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from greenlet import getcurrent

from runtime import events
from runtime.interleaver import Interleaver, original_forward
from runtime.mediator import current_mediator

from .envoy_classes import EnvoyClasses, build as build_envoy_classes
from .suggestions import misspelled_attribute

VALUE = events.VALUE

_EMPTY = object()


def first_input(args: tuple, kwargs: Dict[str, Any]) -> Any:
    """``.input``: the first positional argument, else the first keyword argument."""
    if args:
        return args[0]
    if kwargs:
        return next(iter(kwargs.values()))
    return None


def with_first_input(args: tuple, kwargs: Dict[str, Any], value: Any) -> Tuple[tuple, Dict[str, Any]]:
    """``(args, kwargs)`` with the argument that ``.input`` reads replaced by ``value``."""
    if args:
        return (value,) + tuple(args[1:]), kwargs
    key = next(iter(kwargs))
    return args, {**kwargs, key: value}
_MOUNTS = ("output", "input", "inputs", "source")  # envoy properties a child module may shadow
TREE_VERSION = [0]  # bumped whenever an envoy is added anywhere


class Envoy:
    """Proxy for one module in the tree; ``path`` is its provider prefix (``model.transformer``).

    ``Envoy(module)`` (no ``path``/``interleaver``: a root, as nnsight 0.8 spells it) gives the
    same wrapper as ``NNsight(module)``, with ``.trace``, ``rename=`` and ``envoys=``
    (:mod:`nnsight.envoy_classes`: which Envoy subclass wraps which module).
    """

    def __new__(cls, module: Any = None, *args, **kwargs):
        if (cls is Envoy and isinstance(module, torch.nn.Module) and not args
                and kwargs.get("path") is None and kwargs.get("interleaver") is None):
            from .modeling.base import NNsight

            return object.__new__(NNsight)  # Python then runs NNsight.__init__(module, **kwargs)
        return object.__new__(cls)

    def __init__(self, module: torch.nn.Module, path: str = "model",
                 interleaver: Optional[Interleaver] = None, envoys: Any = None) -> None:
        d = self.__dict__
        d["_envoy_classes"] = envoys if envoys is None or isinstance(envoys, EnvoyClasses) \
            else build_envoy_classes(envoys, Envoy)
        d["_module"] = module
        d["path"] = path
        d["_interleaver"] = interleaver if interleaver is not None else Interleaver()
        d["_output_key"] = path + ".output"
        d["_input_key"] = path + ".input"
        d["_children"] = {}
        d["_fake_output"] = _EMPTY
        d["_fake_inputs"] = _EMPTY
        d["_aliases"] = {}  # alias -> envoy (``rename=``, see nnsight/aliasing.py)
        d["_source"] = None
        d["_running"] = RunningTrace() if interleaver is None else None  # a root's; children share it
        for name, child in module.named_children():
            self._add_envoy(child, name)

    # ------------------------------------------------------------------ tree

    def _add_envoy(self, module: torch.nn.Module, name: str) -> "Envoy":
        path = f"{self.path}.{name}"
        classes = self.__dict__.get("_envoy_classes")
        cls = (classes.pick(module, path) or Envoy) if classes is not None else Envoy
        envoy = cls(module, path, self._interleaver, envoys=classes)
        _share_running(envoy, self.__dict__.get("_running"))
        self._children[name] = envoy
        TREE_VERSION[0] += 1  # roots rebuild their cached module lists (e.g. an SAE added later)
        if name in _MOUNTS:
            _mount_conflict(self, name)
        return envoy

    def _update(self, module: torch.nn.Module) -> None:
        """Point this envoy (and its children) at a new module, e.g. after dispatch."""
        old = self.__dict__["_module"]
        self.__dict__["_module"] = module
        if self._source is not None and old is not module:  # keep `.source` operations working
            from .source import update_source

            self.__dict__["_source"] = update_source(self, self._source, old, module)
        for name, child in module.named_children():
            envoy = self._children.get(name)
            if envoy is None:
                self._add_envoy(child, name)
            else:
                envoy._update(child)

    def named_modules(self, include_fn: Optional[Callable[["Envoy"], bool]] = None
                      ) -> Iterator[Tuple[str, "Envoy"]]:
        """``(path, envoy)`` for this envoy and every descendant (those ``include_fn`` accepts)."""
        if include_fn is None or include_fn(self):
            yield self.path, self
        for child in self._children.values():
            yield from child.named_modules(include_fn)

    def modules(self, include_fn: Optional[Callable[["Envoy"], bool]] = None) -> List["Envoy"]:
        """This envoy and its descendants, in tree order (filtered by ``include_fn``)."""
        return [e for _, e in self.named_modules(include_fn)]

    def get(self, path: str) -> Any:
        """The envoy (or attribute) at a dotted path: ``model.get("transformer.h.0.mlp")``.

        The path is relative to this envoy; it may also start with this envoy's
        own path (``"model.transformer"``). Aliases work as components.
        """
        if path == self.path:
            return self
        if path.startswith(self.path + "."):
            path = path[len(self.path) + 1:]
        obj: Any = self
        for part in path.lstrip(".").split("."):
            if part.lstrip("-").isdigit() and isinstance(obj, Envoy):
                obj = obj[int(part)] if part not in obj._children else obj._children[part]
            else:
                obj = getattr(obj, part)
        return obj

    def __getitem__(self, key):
        names = list(self._children)
        if isinstance(key, slice):
            return [self._children[n] for n in names[key]]
        if isinstance(key, int):
            return self._children[names[key]]
        return self._children[key]

    def __iter__(self) -> Iterator["Envoy"]:
        return iter(list(self._children.values()))

    def __len__(self) -> int:
        return len(self._children)

    def __bool__(self) -> bool:
        """Always true: ``if model.fc:`` tests that the module is there, not that it has children."""
        return True

    # ---------------------------------------------------------------- values

    def _mediator(self):
        mediator = current_mediator()
        if mediator is not None and (mediator.interleaver is self._interleaver
                                     or getattr(mediator, "grad_only", False)):
            return mediator  # a backward tracer's mediator refuses anything but `.grad`
        return None

    def _not_interleaving(self, what: str) -> ValueError:
        return ValueError(
            f"Cannot return {what} of Envoy `{self.path}` that is not interleaving nor has a "
            f"fake {what} set. Access `.{what}` inside a trace that runs the model: "
            f"`with model.trace(input):` or `with tracer.invoke(input):`.")

    @property
    def output(self) -> Any:
        mediator = getattr(getcurrent(), "mediator", None)
        if mediator is not None and mediator.interleaver is self._interleaver:
            if mediator.side is not None:  # a guarded request's: its tensor-side check goes off meanwhile
                return mediator.request(self._output_key)
            # the common case, inlined: Mediator.request (this is paid on every read)
            return mediator._worker.parent.switch((VALUE, self._output_key, mediator.iteration, None))
        mediator = self._mediator()
        if mediator is not None:
            return mediator.request(self._output_key)
        if self._fake_output is not _EMPTY:
            return self._fake_output
        raise self._not_interleaving("output")

    @output.setter
    def output(self, value: Any) -> None:
        mediator = self._mediator()
        if mediator is None:
            raise ValueError(f"Cannot set the output of `{self.path}` outside of a trace.")
        mediator.swap(self._output_key, value)

    @property
    def inputs(self) -> Tuple[tuple, Dict[str, Any]]:
        mediator = self._mediator()
        if mediator is not None:
            return mediator.request(self._input_key)
        if self._fake_inputs is not _EMPTY:
            return self._fake_inputs
        raise self._not_interleaving("inputs")

    @inputs.setter
    def inputs(self, value: Tuple[tuple, Dict[str, Any]]) -> None:
        mediator = self._mediator()
        if mediator is None:
            raise ValueError(f"Cannot set the inputs of `{self.path}` outside of a trace.")
        mediator.swap(self._input_key, value)

    @property
    def input(self) -> Any:
        return first_input(*self.inputs)

    @input.setter
    def input(self, value: Any) -> None:
        mediator = self._mediator()
        if mediator is None:
            raise ValueError(f"Cannot set the input of `{self.path}` outside of a trace.")
        mediator.swap(self._input_key, with_first_input(*mediator.request(self._input_key), value))

    def skip(self, value: Any) -> None:
        """Don't run this module in this execution; ``value`` is its output.

        With several invokes, every invoke must skip the module.
        """
        mediator = self._mediator()
        if mediator is None:
            raise ValueError(f"Cannot skip `{self.path}` outside of a trace.")
        mediator.send(events.SKIP, self._input_key, value)

    @property
    def source(self):
        """The operations of this module's forward; ``print`` it to list them."""
        source = self._source
        if source is None:
            from .source import envoy_source

            source = envoy_source(self)
            self.__dict__["_source"] = source
        return source

    # ------------------------------------------------------------ delegation

    def __call__(self, *args, hook: bool = False, **kwargs) -> Any:
        """Call the module. Inside a trace this bypasses interleaving unless ``hook=True``."""
        if not hook and self._mediator() is not None:
            return original_forward(self._module)(*args, **kwargs)
        return self._module(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        children = self.__dict__.get("_children")
        if children is not None and name in children:
            return children[name]
        aliases = self.__dict__.get("_aliases")
        if aliases and name in aliases:
            return aliases[name]
        module = self.__dict__.get("_module")
        if module is None:
            raise AttributeError(name)
        try:
            value = getattr(module, name)
        except AttributeError:
            raise AttributeError(misspelled_attribute(self, module, name)) from None
        if isinstance(value, torch.nn.Module):
            return self._add_envoy(value, name)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        if name in type(self).__dict__ or any(name in c.__dict__ for c in type(self).__mro__):
            object.__setattr__(self, name, value)
        elif name.startswith("_"):
            self.__dict__[name] = value
        else:
            setattr(self._module, name, value)
            if isinstance(value, torch.nn.Module):
                self._add_envoy(value, name)

    def __repr__(self) -> str:
        """The module tree as torch prints it, from the envoys (with aliases in brackets)."""
        from .aliasing import envoy_repr

        return envoy_repr(self)

    # --------------------------------------------------------- iteration

    @property
    def iter(self):
        """``envoy.iter[...]``: nnsight 0.8's spelling of ``tracer.iter[...]``, on any envoy.

        Every envoy means the cursor of the running trace (there is one per invoke), so
        ``model.transformer.h[0].iter[1:3]`` is ``tracer.iter[1:3]``. Warns with
        ``NNsightDeprecationWarning``.
        """
        from .tracing.iteration import envoy_iter

        return envoy_iter(self)

    def all(self):
        """``envoy.all()``: nnsight 0.8's spelling of ``tracer.all()`` (every step), on any envoy."""
        from .tracing.iteration import envoy_all

        return envoy_all(self)

    # --------------------------------------------------------- device utils

    @property
    def device(self) -> Optional[torch.device]:
        try:
            return next(self._module.parameters()).device
        except StopIteration:
            return None

    @property
    def devices(self) -> set:
        """Every device holding one of the module's parameters or buffers."""
        module = self._module
        return {t.device for t in list(module.parameters()) + list(module.buffers())}

    def to(self, *args, **kwargs) -> "Envoy":
        """Move the module (``torch.nn.Module.to`` arguments); returns this envoy."""
        self._module.to(*args, **kwargs)
        return self

    def cpu(self) -> "Envoy":
        self._module.cpu()
        return self

    def cuda(self, device=None) -> "Envoy":
        self._module.cuda(device)
        return self


class RunningTrace:
    """The tracer running a model now. One per root, shared by every envoy of its tree (and by
    edited copies, which share the tree), so ``envoy.iter`` on any module finds the trace."""

    __slots__ = ("tracer",)

    def __init__(self) -> None:
        self.tracer = None


def _share_running(envoy: Envoy, running: Optional[RunningTrace]) -> None:
    """Give ``envoy`` and its subtree (built before it was attached) the parent's holder."""
    if running is None:
        return
    stack = [envoy]
    while stack:
        node = stack.pop()
        node.__dict__["_running"] = running
        stack.extend(node.__dict__.get("_children", {}).values())


class _Child:
    """A child module named like an envoy property: ``envoy.output`` is that child's envoy."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, envoy, owner=None):
        if envoy is None:
            return self
        return envoy._children[self.name]

    def __set__(self, envoy, value) -> None:
        raise AttributeError(
            f"`{envoy.path}.{self.name}` is a child module; set the envoy's {self.name} "
            f"through `.nns_{self.name}`.")


_preserved: Dict[Tuple[type, str], type] = {}


def _mount_conflict(envoy: Envoy, name: str) -> None:
    """A child named ``output``/``input``/...: the child keeps the name, the property moves
    to ``nns_<name>``."""
    import warnings

    warnings.warn(
        f"Module has pre-defined `{name}` attribute. nnsight access mounted at `.nns_{name}` "
        f"instead. (module `{envoy.path}`)", stacklevel=3)
    cls = type(envoy)
    new = _preserved.get((cls, name))
    if new is None:
        base = cls.__name__ if not cls.__name__.endswith(".Preserved") else cls.__name__[:-10]
        new = type(f"{base}.Preserved", (cls,), {
            name: _Child(name), f"nns_{name}": getattr(Envoy, name), "__module__": cls.__module__})
        _preserved[(cls, name)] = new
    object.__setattr__(envoy, "__class__", new)
