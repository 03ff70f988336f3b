"""Dependency closure: turn a compiled program template into a self-contained Program.

The frontend lowers a with-block to a program whose bindings are all
BIND_RUNTIME names. :func:`close_program` takes the live values of those names
(from the user's frame, on the client) and resolves every one of them, so the
program can run on a server that has never seen the user's code:

* an envoy of the traced model -> BIND_MODEL (its path); the trace's tracer ->
  BIND_TRACER;
* server-provided modules and their objects -> BIND_MODULE / BIND_OBJECT, by
  qualified name (``torch.nn.functional:relu``, ``math:sqrt``);
* user code -- everything outside site-packages and the standard library,
  plus packages registered with ``nnsight.register`` -- by value, as
  Definitions: functions, lambdas (several on one line told apart by column),
  closures (cell contents captured), decorated functions (decorators re-run
  from source), classes (dataclasses, enums, nn.Module subclasses, inheritance
  chains), recursion and mutual recursion, and the module-level globals they
  read, recursively; each user module's needed globals are kept, in module
  order, in one DEF_MODULE definition so its functions share a namespace;
* builtins -> BIND_BUILTIN;
* data -> BIND_VALUE value trees (:mod:`compiler.ir.values`, no pickle), whose
  classes and functions are captured by the same rules.

With ``remote=True`` the server policy (:mod:`compiler.policy`) is enforced:
dangerous or non-guaranteed modules and dangerous builtins raise
:class:`compiler.diagnostics.DiagnosticError`, each diagnostic pointing at the
file, line and column where the user's code uses the name. This package is
torch-free and runs on the client only.
"""
from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, List, Mapping, Optional, Sequence

from ..ir.nodes import BIND_RUNTIME, Binding, Program
from ..ir.verifier import verify
from . import sources  # noqa: F401
from .capture import Closer, default_model_path
from .errors import CaptureRejected, Where
from .reply import ReplyResolver
from .scan import analyze

__all__ = ["Closure", "close_program", "default_model_path"]


@dataclass
class Closure:
    """The result of :func:`close_program`.

    program: the complete program.
    objects: the client's object behind each definition (by index): what a
      result that references a definition decodes to on the client.
    inputs: value trees of the extra ``inputs`` passed to :func:`close_program`.
    """

    program: Program
    objects: List[Any]
    inputs: List[Any] = field(default_factory=list)
    envoy_at: Optional[Callable[[str], Any]] = None
    tracer: Any = None
    _reply: Optional[ReplyResolver] = field(default=None, repr=False, compare=False)

    def resolve(self, ref: Any) -> Any:
        """Client-side ``resolve`` hook for the server's reply: only what this request sent."""
        return self.reply_resolver().resolve(ref)

    def may_build(self, cls: type) -> bool:
        """Client-side ``may_build`` hook: instances only of classes this request sent."""
        return self.reply_resolver().may_build(cls)

    def reply_resolver(self) -> ReplyResolver:
        if self._reply is None:
            self._reply = ReplyResolver(self.program, self.objects, self.inputs, self.envoy_at, self.tracer)
        return self._reply


def close_program(
    program: Program,
    values: Mapping[str, Any],
    *,
    remote: bool = True,
    model_path: Callable[[Any], Optional[str]] = default_model_path,
    envoy_at: Optional[Callable[[str], Any]] = None,
    tracer: Any = None,
    is_tracer: Optional[Callable[[Any], bool]] = None,
    frame_module: Optional[str] = None,
    frame_globals: Optional[dict] = None,
    global_names: Collection[str] = (),
    inputs: Sequence[Any] = (),
) -> Closure:
    """Resolve every binding of ``program`` from ``values`` (name -> live object).

    Names missing from ``values`` are builtins if Python has them, else stay
    BIND_RUNTIME (unbound on the server, exactly as they are unbound here).
    ``model_path(obj)`` returns an envoy's path (None for other objects; it may
    raise ``CaptureRejected`` for envoys of another model); ``tracer`` is the
    tracer the program's BIND_TRACER refers to. ``global_names`` are the names
    whose values came from ``frame_globals``, the namespace of module
    ``frame_module``: their non-atomic values become globals of that module
    (shared with its captured functions). ``inputs`` are extra values encoded
    with the same rules (the traced call's arguments). Raises
    :class:`~compiler.diagnostics.DiagnosticError` listing every rejection.
    """
    closer = Closer(remote=remote, model_path=model_path, tracer=tracer, is_tracer=is_tracer,
                    frame_module=frame_module, frame_globals=frame_globals)
    facts = [(u, analyze(u.source)) for u in program.units]

    def where(name: str) -> Where:
        for unit, f in facts:
            if name in f.positions:
                return Where(unit.loc, unit.source, name, f.positions[name], f, "in the trace")
        unit, f = facts[0]
        return Where(unit.loc, unit.source, name, None, f, "in the trace")

    bindings: List[Binding] = []
    globals_ = frozenset(global_names)
    for b in program.bindings:
        name = b.name
        if name in values:
            value = values[name]
        elif hasattr(builtins, name):
            value = getattr(builtins, name)
        else:
            bindings.append(Binding(name, BIND_RUNTIME))
            continue
        try:
            bindings.append(closer.capture(name, value, where(name), global_form=name in globals_))
        except CaptureRejected:
            bindings.append(Binding(name, BIND_RUNTIME))
    for unit, f in facts:
        closer.imports(f, None, Where(unit.loc, unit.source, "", None, f, "in the trace"))
    trees = []
    first = program.units[0]
    for value in inputs:
        try:
            trees.append(closer.encode(value, Where(first.loc, first.source, "", None, None,
                                                    "as an input of the trace")))
        except CaptureRejected:
            trees.append(None)
    # header features also cover the captured code; lower what older runtimes cannot parse
    from ..passes import finish as finish_syntax  # here: compiler.passes imports the frontend

    closed = finish_syntax(closer.finish(program, bindings))
    verify(closed)
    return Closure(closed, list(closer.objects), trees, envoy_at, tracer)
