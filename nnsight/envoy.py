"""Envoy: a proxy over a ``torch.nn.Module`` that gives access to its values inside a trace.

``model.transformer.h[0]`` is an Envoy wrapping the first GPT-2 block; its
``.output``, ``.input`` and ``.inputs`` ask the running intervention's mediator
for the module's values (design §4). Other attributes fall through to the
module.
"""
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch

from runtime.interleaver import Interleaver, original_forward
from runtime.mediator import current_mediator

_EMPTY = object()


class Envoy:
    """Proxy for one module in the tree; ``path`` is its provider prefix (``model.transformer``)."""

    def __init__(self, module: torch.nn.Module, path: str = "model",
                 interleaver: Optional[Interleaver] = None) -> None:
        d = self.__dict__
        d["_module"] = module
        d["path"] = path
        d["_interleaver"] = interleaver if interleaver is not None else Interleaver()
        d["_output_key"] = path + ".output"
        d["_input_key"] = path + ".input"
        d["_children"] = {}
        d["_fake_output"] = _EMPTY
        d["_fake_inputs"] = _EMPTY
        for name, child in module.named_children():
            self._add_envoy(child, name)

    # ------------------------------------------------------------------ tree

    def _add_envoy(self, module: torch.nn.Module, name: str) -> "Envoy":
        envoy = Envoy(module, f"{self.path}.{name}", self._interleaver)
        self._children[name] = envoy
        return envoy

    def _update(self, module: torch.nn.Module) -> None:
        """Point this envoy (and its children) at a new module, e.g. after dispatch."""
        self.__dict__["_module"] = module
        for name, child in module.named_children():
            envoy = self._children.get(name)
            if envoy is None:
                self._add_envoy(child, name)
            else:
                envoy._update(child)

    def named_modules(self) -> Iterator[Tuple[str, "Envoy"]]:
        yield self.path, self
        for child in self._children.values():
            yield from child.named_modules()

    def modules(self) -> List["Envoy"]:
        return [e for _, e in self.named_modules()]

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

    # ---------------------------------------------------------------- values

    def _mediator(self):
        mediator = current_mediator()
        if mediator is not None and mediator.interleaver is self._interleaver:
            return mediator
        return None

    def _not_interleaving(self, what: str) -> ValueError:
        return ValueError(
            f"Cannot return {what} of Envoy `{self.path}` that is not interleaving nor has a "
            f"fake {what} set. Access `.{what}` inside a trace that runs the model: "
            f"`with model.trace(input):` or `with tracer.invoke(input):`.")

    @property
    def output(self) -> Any:
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
        args, kwargs = self.inputs
        if args:
            return args[0]
        if kwargs:
            return next(iter(kwargs.values()))
        return None

    @input.setter
    def input(self, value: Any) -> None:
        mediator = self._mediator()
        if mediator is None:
            raise ValueError(f"Cannot set the input of `{self.path}` outside of a trace.")
        args, kwargs = mediator.request(self._input_key)
        if args:
            new = ((value,) + tuple(args[1:]), kwargs)
        else:
            key = next(iter(kwargs))
            new = (args, {**kwargs, key: value})
        mediator.swap(self._input_key, new)

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
        module = self.__dict__.get("_module")
        if module is None:
            raise AttributeError(name)
        try:
            value = getattr(module, name)
        except AttributeError:
            raise AttributeError(f"{module} has no attribute {name}") from None
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
        return repr(self._module)

    # --------------------------------------------------------- device utils

    @property
    def device(self) -> Optional[torch.device]:
        try:
            return next(self._module.parameters()).device
        except StopIteration:
            return None
