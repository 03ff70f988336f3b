"""Tracer: a ``with`` block compiled to IR and executed by the runtime after it closes.

On ``__enter__`` the tracer finds its body: either a unit of an already
compiled program (a tracing context nested in traced code claims it), or the
user's own source, lowered by the frontend (cached per call site). The body
is not executed in place; on ``__exit__`` :meth:`execute` runs it.
"""
import sys
from typing import Any, Dict, Optional

from runtime import claims, saves, skip
from runtime.accept import prepare_namespace
from runtime.builder import CompiledProgram, namespace
from runtime.frames import release_locals, write_back

from .compile import compile_call_site
from .tracebacks import clean, register_program_sources
from .unsaved import placeholders


class Tracer:
    """Base class of every tracing context (trace, invoke-less generate, session, ...)."""

    def __init__(self, model: Any = None) -> None:
        self.model = model
        self._frame = None
        self._compiled: Optional[CompiledProgram] = None
        self._unit_id = 0
        self._nested = False
        self._armed = None
        self._remote = None  # "local" or True: run through the request path (nnsight/tracing/remote.py)
        self._blocking = True  # remote=True: wait for the result (False: tracer.backend fetches it later)

    # ------------------------------------------------------------- protocol

    def __enter__(self):
        frame = sys._getframe(1)
        self._frame = frame
        try:
            claimed = claims.claim(frame)
            if claimed is not None:
                self._compiled, self._unit_id = claimed
                self._nested = True
            else:
                self._compiled = compile_call_site(frame)
                self._unit_id = 0
                self._armed = None if self._compiled.trivial else skip.arm(frame, self._as_target)
        except Exception as error:  # e.g. the with-block's source can't be found: point at it
            raise clean(error)
        return self._as_target()

    def _as_target(self):
        """What ``with ... as x`` binds: the tracer (``model.edit()`` binds the edited model)."""
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        frame = self._frame
        if not self._nested:
            if self._armed is not None:
                skip.disarm(frame, self._armed)
                if exc_type is not skip.SkipBody:
                    return False
            elif exc_type is not None:
                return False
        elif exc_type is not None:
            return False
        saves.enter()
        try:
            if self._remote is not None and not self._nested:
                from .remote import run_remote

                saved = run_remote(self, frame)
                write_back(frame, {**self._placeholders(frame, saved), **saved})
            else:
                ns = self._namespace()
                self.execute(ns)
                self._write_back(ns)
        except BaseException as error:
            raise clean(error)
        finally:
            saves.exit()
            if not self._nested:
                release_locals(frame)
            self._frame = None
        return True

    def run_program(self, compiled: CompiledProgram, ns: Dict[str, Any]) -> Dict[str, Any]:
        """Run a compiled program as this tracer's body, without a user frame.

        ``ns`` binds the program's free names (on a server also ``runtime.local_blocks.LOCAL_BLOCKS``,
        which runs its ``tracer.local()`` blocks on the client). Returns the saved variables by
        name (what a server sends back, and what ``remote='local'`` writes back).
        """
        self._compiled, self._unit_id, self._nested = compiled, 0, False
        prepare_namespace(ns)
        register_program_sources(compiled.program)  # its files may not exist here
        saves.enter()
        try:
            self.execute(ns)
            return self._saved(ns)
        except BaseException as error:
            raise clean(error)
        finally:
            saves.exit()

    def local(self):
        """``with tracer.local():`` -- in a remote trace, a block that runs on the client.

        The server stops at the block and sends the values it reads; the block runs
        here (with your own functions and data); what it assigns, edits in place or
        saves goes back, and the forward pass continues. Without ``remote=`` the block
        runs inline. See :mod:`nnsight.tracing.local_block`.
        """
        from .local_block import LocalBlock

        return LocalBlock(self)

    # ------------------------------------------------------------ execution

    @property
    def ir(self):
        """The IR program this tracer runs (``print(tracer.ir)`` shows its text)."""
        return self._compiled.program if self._compiled is not None else None

    def _code(self):
        return self._compiled.units[self._unit_id].code

    def _namespace(self) -> Dict[str, Any]:
        """Globals for the body: the enclosing program's, or bound from the user's frame."""
        frame = self._frame
        if self._nested:
            return frame.f_globals
        return namespace(self._compiled.free_names, frame.f_locals, frame.f_globals)

    def _saved(self, ns: Dict[str, Any]) -> Dict[str, Any]:
        """The variables the body assigned whose values were saved."""
        found = {}
        for name in self._compiled.writeback_names(self._unit_id):
            if name in ns and id(ns[name]) in saves.SAVES:
                found[name] = ns[name]
        return found

    def _write_back(self, ns: Dict[str, Any]) -> None:
        """Copy saved variables back into the user's frame (top-level tracers only).

        Names the body set without saving them get a placeholder that says to save them.
        """
        if not self._nested:
            saved = self._saved(ns)
            write_back(self._frame, {**self._placeholders(self._frame, saved), **saved})

    def _placeholders(self, frame, saved: Dict[str, Any]) -> Dict[str, Any]:
        """For each name the body set but did not save (and the caller has no variable of)."""
        names = self._compiled.writeback_names(self._unit_id)
        if len(saved) == len(names):  # every name saved (the usual case): no frame snapshot to read
            return {}
        where = f"{frame.f_code.co_filename}:{frame.f_lineno}"
        return placeholders(names, saved, frame.f_locals, where)

    def execute(self, ns: Dict[str, Any]) -> None:
        """Run the body (``self._code()``) with globals ``ns``."""
        raise NotImplementedError
