"""``envoy.source``: the operations inside a module's forward, as envoys.

    print(model.transformer.h[0].attn.source)       # operation names and line numbers
    with model.trace("Hello"):
        out = model.transformer.h[0].attn.source.attention_interface_0.output.save()

:class:`EnvoySource` lists the calls and assignments of a forward (see
:mod:`runtime.source` for how the forward is rewritten and how operations are
named); ``source.names`` gives their names in order, iterating it gives the
operations. Each is an :class:`OperationEnvoy` with ``.output``, ``.input``,
``.inputs`` (readable and writable inside a trace), ``.skip(value)`` and, for
calls, a recursive ``.source`` that traces into the called function.
"""
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch

from runtime import events
from runtime import source as rsource
from runtime.errors import SourceNotAvailable
from runtime.mediator import current_mediator

from .envoy import first_input, with_first_input


class OperationEnvoy:
    """One call site of a traced function: provider ``<prefix>.<name>``."""

    def __init__(self, parent: "EnvoySource", name: str, line: int) -> None:
        self._interleaver = parent._interleaver  # weak, as the source's (no reference back to it)
        self._injected = parent._injected
        self.name = name
        self.path = f"{parent.path}.{name}"
        self.line = line  # line in the function's file
        self.is_assignment = name in parent._injected.assignments  # `x = value`, not a call
        self._keys = (self.path + ".fn", self.path + ".input", self.path + ".output")
        self._nested: Optional[Tuple[Any, "EnvoySource"]] = None

    # ------------------------------------------------------------------ values

    def _mediator(self, what: str):
        mediator = current_mediator()
        interleaver = self._interleaver()
        if mediator is not None and (mediator.interleaver is interleaver or getattr(mediator, "grad_only", False)):
            return mediator
        raise SourceNotAvailable(
            f"Cannot access the {what} of operation `{self.path}` outside of a trace. Use "
            f"`.source.{self.name}.{what}` inside `with model.trace(input):`.")

    @property
    def output(self) -> Any:
        return self._mediator("output").request(self._keys[2])

    @output.setter
    def output(self, value: Any) -> None:
        self._mediator("output").swap(self._keys[2], value)

    @property
    def inputs(self) -> Tuple[tuple, Dict[str, Any]]:
        return self._mediator("inputs").request(self._keys[1])

    @inputs.setter
    def inputs(self, value: Tuple[tuple, Dict[str, Any]]) -> None:
        self._mediator("inputs").swap(self._keys[1], value)

    @property
    def input(self) -> Any:
        return first_input(*self.inputs)

    @input.setter
    def input(self, value: Any) -> None:
        mediator = self._mediator("input")
        mediator.swap(self._keys[1], with_first_input(*mediator.request(self._keys[1]), value))

    def skip(self, value: Any) -> None:
        """Don't run this call in this execution; ``value`` is its output (an assignment assigns ``value``).

        With several invokes, every invoke must skip it, each with its own rows.
        """
        self._mediator("skip").send(events.SKIP, self._keys[1], value)

    # ------------------------------------------------------------ recursion

    @property
    def source(self) -> "EnvoySource":
        """The operations of the function this call runs (inside a trace: it waits for the call)."""
        if self.is_assignment:
            raise SourceNotAvailable(
                f"`{self.name}` is an assignment (line {self.line}), not a call: there is no function to "
                f"trace into. print(<envoy>.source) shows the calls.")
        mediator = current_mediator()
        interleaver = self._interleaver()
        if mediator is None or mediator.interleaver is not interleaver:
            raise SourceNotAvailable(
                f"Must be within a trace to use recursive `.source` (on operation `{self.path}`): "
                f"the function an operation calls is only known when it runs. Access "
                f"`.source.{self.name}.source` inside a `with model.trace(...)` block.")
        fn = mediator.request(self._keys[0])
        if isinstance(fn, torch.nn.Module):
            where = getattr(fn, "__path__", None) or type(fn).__name__
            raise SourceNotAvailable(
                f"Don't call .source on a module ({where}) from within another .source. "
                f"Call it directly on the module's envoy: `<envoy>.source`.")
        try:
            plain = rsource._plain_function(fn)
        except rsource.SourceError as error:
            raise SourceNotAvailable(f"Operation `{self.path}` can't be traced into: {error}") from None
        nested = self._nested
        if nested is None or nested[0] is not plain.__code__:
            injected = rsource.inject(fn)
            nested = (plain.__code__, EnvoySource(self.path, injected, interleaver))
            self._nested = nested
        source = nested[1]
        mediator.swap(self._keys[0], rsource.build(fn, source._hook, source._injected))
        return source

    # --------------------------------------------------------------- display

    def __str__(self) -> str:
        injected = self._injected
        lines = injected.source.split("\n")
        at = self.line - injected.def_line  # index in lines
        start, end = max(0, at - 4), min(len(lines), at + 5)
        out = [self.path + ":", ""]
        if start:
            out.append("    ....")
        for i in range(start, end):
            marker = "-->" if i == at else "   "
            out.append(f" {marker} {i - 1 if i else '*':>3} {lines[i]}")
        if end < len(lines):
            out.append("    ....")
        return "\n".join(out)

    def __repr__(self) -> str:
        return f"<OperationEnvoy {self.path} (line {self.line})>"


class EnvoySource:
    """The operations of one function (a module's forward, or a called function)."""

    def __init__(self, path: str, injected: "rsource.Injected", interleaver) -> None:
        import weakref

        self.path = path
        self._injected = injected
        self._interleaver = weakref.ref(interleaver)
        self._hook = rsource.OpHook(path, interleaver)
        self._operations: Dict[str, OperationEnvoy] = {
            name: OperationEnvoy(self, name, line) for name, line in injected.operations}

    @property
    def operations(self) -> List[OperationEnvoy]:
        return list(self._operations.values())

    @property
    def names(self) -> Tuple[str, ...]:
        """The operations' names, in the order they run."""
        return tuple(self._operations)

    def _find(self, name: str) -> Optional[OperationEnvoy]:
        ops = self.__dict__.get("_operations")
        if ops is None:
            return None
        op = ops.get(name)
        if op is None:  # nnsight 0.8's name of a call (calls and assignments counted together)
            own = self._injected.aliases.get(name)
            op = ops.get(own) if own is not None else None
        return op

    def __getattr__(self, name: str) -> OperationEnvoy:
        op = self._find(name)
        if op is not None:
            return op
        raise AttributeError(
            f"`{self.__dict__.get('path')}` has no operation {name!r}; print(envoy.source) lists them.")

    def __getitem__(self, name: str) -> OperationEnvoy:
        op = self._find(name)
        if op is None:
            raise KeyError(name)
        return op

    def __contains__(self, name: str) -> bool:
        return self._find(name) is not None

    def __iter__(self) -> Iterator[OperationEnvoy]:
        return iter(list(self._operations.values()))

    def __len__(self) -> int:
        return len(self._operations)

    def __dir__(self):
        return list(super().__dir__()) + list(self._operations)

    def __str__(self) -> str:
        """The source with each operation's name and line (0 = first line after the ``def``)."""
        injected = self._injected
        lines = injected.source.split("\n")
        by_line: Dict[int, List[str]] = {}
        for name, line in injected.operations:
            by_line.setdefault(line - injected.def_line, []).append(name)
        width = max((len(n) for n, _ in injected.operations), default=0)
        out = [" " * (width + 6) + "* " + lines[0]]
        for i, text in enumerate(lines[1:], start=1):
            names = by_line.get(i)
            if names:
                out.append(f" {names[0]:{width}} ->{i - 1:3d} {text}")
                indent = " " * (len(text) - len(text.lstrip()))
                for extra in names[1:]:
                    out.append(f" {extra:{width}} ->  + {indent}...")
            else:
                out.append(" " * (width + 4) + f"{i - 1:3d} {text}")
        return "\n".join(out)

    def __repr__(self) -> str:
        return str(self)


def envoy_source(envoy) -> EnvoySource:
    """Build ``envoy.source``: rewrite its module's forward and use it from now on."""
    module = envoy._module
    forward = _module_forward(module)
    injected = rsource.inject(forward)
    source = EnvoySource(envoy.path, injected, envoy._interleaver)
    rsource.activate(envoy._interleaver, envoy.path, module, rsource.build(forward, source._hook, injected))
    return source


def update_source(envoy, source: EnvoySource, old_module, module) -> EnvoySource:
    """After ``envoy._update``: route the new module through the rewritten forward too."""
    interleaver = envoy._interleaver
    interleaver.sources.pop(old_module, None)
    forward = _module_forward(module)
    injected = rsource.inject(forward)
    if injected is not source._injected:
        source = EnvoySource(envoy.path, injected, interleaver)
    rsource.activate(interleaver, envoy.path, module, rsource.build(forward, source._hook, injected))
    return source


def _module_forward(module):
    """The function to rewrite: the class's forward (decorators included, reapplied by build)."""
    return type(module).forward
