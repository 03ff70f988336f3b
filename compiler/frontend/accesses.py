"""Static envoy accesses of unit code.

An *envoy chain* is a name followed by attribute / constant-subscript steps up
to the first *terminal* attribute (:data:`TERMINALS`):
``model.transformer.h[0].output.save()`` gives
``("model", ("transformer", "h", "0"), "output")``. Steps after the terminal
act on the value and are ignored. Constant subscripts are integer literals
(``-1`` included) and string literals.

Every other use of a name is *non-static* for that name: a non-constant or
slice subscript before the terminal (``h[i]``), a call before it
(``model.layer(x)``), or the bare name / chain used as a value (passed to a
function, stored in a variable, iterated). The exception is a chain whose first
step is in :data:`ROOT_ATTRIBUTES` (``model.trace(...)``,
``model.tokenizer``...), which touches no submodule. The runtime knows which
names are models: it hooks only the touched modules unless one of them is in
:attr:`AccessReport.dynamic_roots`.
"""
from __future__ import annotations

import keyword
from dataclasses import dataclass
from typing import FrozenSet, Iterable, List, Optional, Sequence, Set, Tuple, Union

from ._lazy import libcst as cst  # imported on first use: the ast fast path never needs it


def parse_module(code: str):
    from .parse import parse_module as parse

    return parse(code)

TERMINALS = frozenset(("output", "input", "inputs", "skip", "source", "next", "grad"))

# Attributes of a model object that are not submodules.
ROOT_ATTRIBUTES = frozenset(
    (
        "trace", "generate", "session", "scan", "edit", "invoke", "iter", "all", "stop",
        "tokenizer", "config", "dispatch", "dispatched", "device", "dtype", "interleave",
        "pipe", "pipeline", "task",
    )
)

# Attributes whose use needs every module hooked, whatever the chain (``.cache()``, ``.source``,
# ``model.get("path")``, ``.modules()``...): the runtime cannot name the modules they reach.
NEEDS_ALL_ATTRIBUTES = frozenset(("cache", "source", "get", "modules", "named_modules"))
# Keyword arguments with the same effect (``hook=True`` asks for every module's hooks).
NEEDS_ALL_KEYWORDS = frozenset(("hook",))

Chain = Tuple[str, Tuple[str, ...], str]


@dataclass(frozen=True)
class AccessReport:
    """chains: static envoy chains, unique, in order of appearance.
    dynamic_roots: names with at least one non-static use.
    needs_all: the code uses an attribute of :data:`NEEDS_ALL_ATTRIBUTES` or a keyword of
      :data:`NEEDS_ALL_KEYWORDS`, so every module must be hooked.
    """

    chains: Tuple[Chain, ...]
    dynamic_roots: FrozenSet[str]
    needs_all: bool = False

    def ir_fields(self) -> dict:
        """``envoys``, ``dynamic`` and ``dynamic_names`` of the IR :class:`~compiler.ir.nodes.Program`.

        A chain with a string step holding a dot cannot be a dotted path: its root is made
        dynamic instead. ``True``/``False``/``None`` (names in libcst's tree) are never models.
        """
        envoys: List[str] = []
        dynamic = set(self.dynamic_roots)
        for root, path, _ in self.chains:
            if any("." in step for step in path):
                dynamic.add(root)
                continue
            dotted = ".".join((root,) + path)
            if dotted not in envoys:
                envoys.append(dotted)
        names = tuple(sorted(n for n in dynamic if n.isidentifier() and not keyword.iskeyword(n)))
        return {"envoys": tuple(envoys), "dynamic": self.needs_all, "dynamic_names": names}

    @classmethod
    def from_program(cls, program) -> "Optional[AccessReport]":
        """The report a program's IR carries, or None when it needs every module hooked."""
        if program.dynamic:
            return None
        chains = []
        for path in program.envoys:
            parts = path.split(".")
            chains.append((parts[0], tuple(parts[1:]), ""))
        return cls(tuple(chains), frozenset(program.dynamic_names), False)

    def dynamic_for(self, model_names: Iterable[str]) -> bool:
        """Whether any of ``model_names`` is used non-statically."""
        return any(name in self.dynamic_roots for name in model_names)

    def envoy_paths(self, model_names: Iterable[str]) -> Tuple[str, ...]:
        """Dotted paths (``"model.transformer.h.0"``) of chains rooted at the models."""
        names = set(model_names)
        out: List[str] = []
        for root, path, _ in self.chains:
            if root in names:
                dotted = ".".join((root,) + path)
                if dotted not in out:
                    out.append(dotted)
        return tuple(out)


def scan_accesses(sources: Union[str, Sequence[str], Iterable[cst.CSTNode]]) -> AccessReport:
    """Report the envoy accesses of a source text, several texts, or libcst nodes."""
    if isinstance(sources, str):
        nodes: List[cst.CSTNode] = [parse_module(sources)]
    else:
        nodes = [parse_module(s) if isinstance(s, str) else s for s in sources]
    scanner = _Scanner()
    for node in nodes:
        scanner.visit(node)
    return AccessReport(tuple(scanner.chains), frozenset(scanner.dynamic), scanner.needs_all)


def envoy_chains(sources: Union[str, Sequence[str]]) -> List[Chain]:
    """Static envoy chains ``(root, segments, terminal)`` of unit sources."""
    return list(scan_accesses(sources).chains)


def _constant_index(sub: cst.Subscript) -> Optional[str]:
    if len(sub.slice) != 1 or not isinstance(sub.slice[0].slice, cst.Index):
        return None
    index = sub.slice[0].slice
    if getattr(index, "star", None) is not None:
        return None
    value = index.value
    sign = ""
    if isinstance(value, cst.UnaryOperation) and isinstance(value.operator, cst.Minus):
        sign, value = "-", value.expression
    if isinstance(value, cst.Integer):
        return sign + str(int(value.value.replace("_", ""), 0))
    if isinstance(value, cst.SimpleString) and not sign:
        evaluated = value.evaluated_value
        return evaluated if isinstance(evaluated, str) else None
    return None


class _Scanner:
    def __init__(self) -> None:
        self.chains: List[Chain] = []
        self.seen: Set[Chain] = set()
        self.dynamic: Set[str] = set()
        self.needs_all = False

    def visit(self, node: cst.CSTNode) -> None:
        handler = getattr(self, "v_" + type(node).__name__, None)
        if handler is not None:
            handler(node)
        else:
            for child in node.children:
                self.visit(child)

    def v_Name(self, node: cst.Name) -> None:
        self.dynamic.add(node.value)  # bare use

    def v_Attribute(self, node: cst.CSTNode) -> None:
        self._chain(node)

    v_Subscript = v_Attribute
    v_Call = v_Attribute

    def v_Arg(self, node: cst.Arg) -> None:
        if node.keyword is not None and node.keyword.value in NEEDS_ALL_KEYWORDS:
            self.needs_all = True
        self.visit(node.value)

    def v_Param(self, node: cst.Param) -> None:
        if node.annotation is not None:
            self.visit(node.annotation)
        if node.default is not None:
            self.visit(node.default)

    def v_FunctionDef(self, node: cst.FunctionDef) -> None:
        for d in node.decorators:
            self.visit(d)
        self.visit(node.params)
        if node.returns is not None:
            self.visit(node.returns)
        self.visit(node.body)

    def v_ClassDef(self, node: cst.ClassDef) -> None:
        for part in list(node.decorators) + list(node.bases) + list(node.keywords):
            self.visit(part)
        self.visit(node.body)

    def v_Import(self, node) -> None:
        pass

    v_ImportFrom = v_Import
    v_Global = v_Import
    v_Nonlocal = v_Import

    def _chain(self, node: cst.CSTNode) -> None:
        steps: List[cst.CSTNode] = []
        base = node
        while isinstance(base, (cst.Attribute, cst.Subscript, cst.Call)):
            steps.append(base)
            base = base.func if isinstance(base, cst.Call) else base.value
        steps.reverse()
        # sub-expressions are scanned on their own
        for step in steps:
            if isinstance(step, cst.Attribute):
                if step.attr.value in NEEDS_ALL_ATTRIBUTES:
                    self.needs_all = True
            elif isinstance(step, cst.Subscript):
                for el in step.slice:
                    self.visit(el)
            elif isinstance(step, cst.Call):
                for arg in step.args:
                    self.visit(arg)
        if not isinstance(base, cst.Name):
            self.visit(base)
            return
        root = base.value
        first = steps[0]
        if isinstance(first, cst.Attribute) and first.attr.value in ROOT_ATTRIBUTES:
            return
        path: List[str] = []
        for step in steps:
            if isinstance(step, cst.Attribute):
                if step.attr.value in TERMINALS:
                    chain = (root, tuple(path), step.attr.value)
                    if chain not in self.seen:
                        self.seen.add(chain)
                        self.chains.append(chain)
                    return
                path.append(step.attr.value)
            elif isinstance(step, cst.Subscript):
                index = _constant_index(step)
                if index is None:
                    break
                path.append(index)
            else:  # a call before any terminal
                break
        self.dynamic.add(root)
