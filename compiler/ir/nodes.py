"""IR node types: small, immutable, documented.

A :class:`Program` is a self-contained description of one intervention: the
code of a ``with model.trace(...)`` block (and every tracing block nested in
it) as :class:`CodeUnit` s, and the :class:`Binding` s of the free names that
code uses. Programs are plain data: no live Python objects, no pickle, no
bytecode. They print to text (:mod:`compiler.ir.printer`), parse back
(:mod:`compiler.ir.parser`) and encode to msgpack+zstd (:mod:`compiler.ir.binary`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Tuple

from .version import IR_VERSION, MIN_PYTHON


@dataclass(frozen=True)
class Header:
    """Mandatory first record of every program.

    ir_version: format version (see :mod:`compiler.ir.version`).
    producer: ``"nnsight <version>"`` of the client that compiled it.
    python: ``"3.X.Y"`` of the client that compiled it.
    min_python: lowest ``(major, minor)`` whose grammar accepts every unit.
    features: syntax features that raised min_python, as ``(name, line)``
      pairs (for example ``("match statement", 12)``).
    """

    ir_version: int = IR_VERSION
    producer: str = ""
    python: str = ""
    min_python: Tuple[int, int] = MIN_PYTHON
    features: Tuple[Tuple[str, int], ...] = ()


@dataclass(frozen=True)
class SourceLoc:
    """Where code came from in the user's world: file, 1-based line, 0-based column."""

    file: str
    line: int
    col: int = 0


# CodeUnit.kind values.
UNIT_TRACE = "trace"  # body of the outermost with-block the program was built from
UNIT_BLOCK = "block"  # body of a with-statement nested in another unit


@dataclass(frozen=True)
class CodeUnit:
    """One block of user code, as normalized (dedented) source.

    id: index of the unit in ``Program.units``; unit 0 is the root.
    kind: UNIT_TRACE for the root, UNIT_BLOCK for nested with-bodies.
    source: the body's statements, dedented to column 0, ending in a newline.
    loc: file, line and column of the body's first line in the user's file.
    parent: id of the enclosing unit (None for the root).
    header: ``(first, last)`` lines (user-file numbering) of the with-statement
      header that owns this body; a tracing context entered on one of those
      lines inside the parent unit runs this unit as its body.
    assigned: names the unit binds at its top level (candidates for write-back).
    target: the name the unit's with-statement binds with ``as NAME`` (its first
      with-item whose target is a plain name; None when there is none).
    facts: what the frontend found about this unit, from :data:`UNIT_FACTS`
      (``FACT_INVOKE``: its with-header calls ``.invoke(...)``, so the parent's
      body opens invokes; ``FACT_LOCAL``: its with-header is ``<tracer>.local()``, a
      block that runs on the client; ``FACT_BACKWARD``: its with-header calls
      ``<expr>.backward(...)``, a gradient session over the model's backward pass).
      The runtime decides from these, never from source text.
    reads: for a ``FACT_LOCAL`` unit, the names it reads that the rest of the program
      assigns: their values are sent to the client when the block is reached.
    """

    id: int
    kind: str
    source: str
    loc: SourceLoc
    parent: Optional[int] = None
    header: Tuple[int, int] = (0, 0)
    assigned: Tuple[str, ...] = ()
    target: Optional[str] = None
    facts: Tuple[str, ...] = ()
    reads: Tuple[str, ...] = ()


# CodeUnit.facts values.
FACT_INVOKE = "invoke"  # the unit's with-header calls ``<something>.invoke(...)``
FACT_LOCAL = "local"  # the unit's with-header is ``<tracer>.local()``: its body runs on the client
FACT_BACKWARD = "backward"  # the unit's with-header calls ``<expr>.backward(...)``: a gradient session
UNIT_FACTS = (FACT_INVOKE, FACT_LOCAL, FACT_BACKWARD)


# Binding.kind values.
BIND_RUNTIME = "runtime"  # not captured: resolved from the caller's frame at run time
BIND_MODEL = "model"  # the wrapped model (an Envoy); value: envoy path, e.g. "model"
BIND_TRACER = "tracer"  # the tracer object of the with-statement (its ``as`` target)
BIND_MODULE = "module"  # a module by name: server-provided, or one of the program's DEF_MODULE definitions
BIND_OBJECT = "object"  # an attribute of such a module; value: "module:qualname"
BIND_VALUE = "value"  # a captured value; value: an encoded value tree (compiler.ir.values)
BIND_FUNCTION = "function"  # user code captured by value; value: index into Program.definitions
BIND_CLASS = "class"  # user class captured by value; value: index into Program.definitions
BIND_BUILTIN = "builtin"  # a builtin name; value: the name

BINDING_KINDS = (
    BIND_RUNTIME,
    BIND_MODEL,
    BIND_TRACER,
    BIND_MODULE,
    BIND_OBJECT,
    BIND_VALUE,
    BIND_FUNCTION,
    BIND_CLASS,
    BIND_BUILTIN,
)


@dataclass(frozen=True)
class Binding:
    """What a free name of the program's code refers to."""

    name: str
    kind: str
    value: Any = None


# Definition.kind values.
DEF_STATEMENT = "def"  # a module-level statement (def/class with its decorators, or ``name = ...``) run in
#                        its module's namespace; the object is then the module global ``name``
DEF_LOCAL = "local"  # a function (def without decorators, or a lambda expression) rebuilt on its own:
#                      ``cells`` fill its closure, ``attrs`` its defaults; its globals are its module's
DEF_MODULE = "module"  # a user module captured by value: ``globals`` are its needed globals, in module order
DEF_KINDS = (DEF_STATEMENT, DEF_LOCAL, DEF_MODULE)


@dataclass(frozen=True)
class Definition:
    """User code captured by value (dependency closure).

    name: qualified name in its home module (``"normalize"``, ``"Stats.add"``,
      ``"make_scaler.scale"``; ``"lambda"`` for lambdas).
    module: the module it was defined in (``"mymethods"``, ``"__main__"``).
      Definitions of one module share one namespace on the server.
    source: its dedented source (decorators included for DEF_STATEMENT).
    loc: where the source lives in the user's world.
    globals: bindings installed in the module's namespace (before the
      definition runs), in order.
    kind: DEF_STATEMENT (default), DEF_LOCAL or DEF_MODULE (see above).
    cells: DEF_LOCAL: contents of the closure cells, by free-variable name.
    attrs: DEF_LOCAL: attributes set after creation (``__defaults__``,
      ``__kwdefaults__``, entries of the function's ``__dict__``).
    """

    name: str
    module: str
    source: str
    loc: SourceLoc
    globals: Tuple[Binding, ...] = ()
    kind: str = DEF_STATEMENT
    cells: Tuple[Binding, ...] = ()
    attrs: Tuple[Binding, ...] = ()


@dataclass(frozen=True)
class Program:
    """A complete intervention program.

    header: version information (mandatory).
    units: the code units; ``units[0]`` is the root trace body.
    bindings: one per free name of the units, in first-use order.
    definitions: user functions/classes captured by value.
    envoys: the static envoy chains of the code, as dotted paths from the
      name they start at (``"model.transformer.h.0"`` for
      ``model.transformer.h[0].output``), unique, in order of appearance.
    dynamic: True when the code needs every module hooked whatever its names
      are bound to (``.cache()``, ``.source``, ``.get()``, ``.modules()``,
      ``.named_modules()``, a ``hook=`` argument), or when the frontend did not
      analyse it (the conservative default).
    dynamic_names: names used other than as the start of a static chain
      (``h[i]``, passed to a function, iterated): if one of them is bound to a
      model at run time, every module of that model is hooked.
    unknown_facts: unit facts (from :data:`UNIT_FACTS`) its producer did not look for, so
      a unit without one of them may still be what the fact describes: a program upgraded
      from an IR version that predates the fact. Empty for every program the frontend builds.
    """

    header: Header
    units: Tuple[CodeUnit, ...]
    bindings: Tuple[Binding, ...] = ()
    definitions: Tuple[Definition, ...] = ()
    envoys: Tuple[str, ...] = ()
    dynamic: bool = True
    dynamic_names: Tuple[str, ...] = ()
    unknown_facts: Tuple[str, ...] = ()

    def __str__(self) -> str:
        """The text form (:func:`compiler.ir.print_program`): ``print(tracer.ir)`` reads like the IR."""
        from .printer import print_program

        return print_program(self)

    @property
    def root(self) -> CodeUnit:
        return self.units[0]

    def children(self, unit_id: int) -> Tuple[CodeUnit, ...]:
        return tuple(u for u in self.units if u.parent == unit_id)

    def knows(self, fact: str) -> bool:
        """Did the producer look for ``fact``? (If not, its absence from a unit says nothing.)"""
        return fact not in self.unknown_facts

    def binding(self, name: str) -> Optional[Binding]:
        for b in self.bindings:
            if b.name == name:
                return b
        return None
