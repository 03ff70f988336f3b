"""Model editing: persistent interventions.

    with model.edit() as model_edited:          # a copy; `model` is unchanged
        model.transformer.h[0].output[0][:] = 0
    with model.edit(inplace=True):               # every later trace of `model`
        ...
    model.clear_edits()

The body of an edit block does not run when the block closes: it is kept (its
compiled code unit and the namespace of its free names) and becomes an extra
intervention — a mediator over the whole batch, placed before the trace's own
invokes — in every later trace, generation or session trace of the edited
model. Edits run at iteration 0 of each provider unless they move their own
cursor (``tracer``-less code can't, so an edit applies to the first call of
each module: the whole forward of a trace, the first step of a generation).

``model.edit()`` returns a shallow copy of the root envoy: it shares the
module, its weights, the envoy tree and the interleaver with the original, and
has its own list of edits (a copy of the original's, so edits stack). The
original keeps its own list. Values read in an edit body are never written
back; ``.save()`` there is pointless.

nnsight 0.8's spelling ``with model.edit() as (tracer, edited):`` works too
(with a ``NNsightDeprecationWarning``): the with-statement's target is read
from the caller's bytecode, and a two-name target gets ``(tracer, edited)``.
"""
import dis
import warnings
from typing import Any, Dict, List, Optional, Tuple

from runtime.mediator import Mediator

from ..deprecation import NNsightDeprecationWarning
from .base import Tracer


class EditingTracer(Tracer):
    """``with model.edit(...) as edited:`` — records the body as a persistent intervention."""

    def __init__(self, model, *, inplace: bool = False) -> None:
        super().__init__(model)
        self._target = model if inplace else model._shallow_copy()
        self._pair: Optional[bool] = None  # `as (tracer, edited)`: decided on the first call

    def _as_target(self):
        if self._pair is None:  # first called from __enter__, while the frame is at the with
            frame = self._frame
            self._pair = frame is not None and _unpacks_pair(frame)
            if self._pair:
                warnings.warn_explicit(
                    "`with model.edit() as (tracer, edited):` is the nnsight 0.8 spelling; "
                    "`with model.edit() as edited:` binds the edited model directly.",
                    NNsightDeprecationWarning, frame.f_code.co_filename, frame.f_lineno,
                    module=frame.f_globals.get("__name__", "__main__"),
                    registry=frame.f_globals.setdefault("__warningregistry__", {}))
        return (self, self._target) if self._pair else self._target

    def execute(self, ns: Dict[str, Any]) -> None:
        self._target._add_edit(self._code(), ns)


class EditingMixin:
    """``edit`` / ``clear_edits`` on root models."""

    def edit(self, *, inplace: bool = False) -> EditingTracer:
        """A with-block whose body is applied to every later trace (of a copy, or in place)."""
        return EditingTracer(self, inplace=inplace)

    def clear_edits(self) -> None:
        """Remove every edit of this model (an edited copy's edits are its own)."""
        self.__dict__["_edits"] = []

    def _edit_list(self) -> List[Tuple[Any, Dict[str, Any]]]:
        return self.__dict__.setdefault("_edits", [])

    def _add_edit(self, code, ns: Dict[str, Any]) -> None:
        self._edit_list().append((code, ns))

    def _shallow_copy(self):
        """A new root envoy over the same module and envoy tree, with its own edits."""
        self._ensure_dispatched()  # the copy and the original must agree on the weights
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.__dict__["_edits"] = list(self._edit_list())
        return new

    def _edit_mediators(self, ns: Dict[str, Any]) -> List[Mediator]:
        """One whole-batch mediator per edit, for a trace whose own code runs in ``ns``.

        An edit's code runs in its own namespace (its free names, bound where
        the edit was made) laid over the trace's, so both programs' model names
        resolve (the hook plan reads the first mediator's namespace).
        """
        edits = self.__dict__.get("_edits")
        if not edits:
            return []
        return [Mediator(code, {**ns, **edit_ns}, None, name="edit") for code, edit_ns in edits]


_SKIPPED = frozenset({"CACHE", "EXTENDED_ARG"})


def _unpacks_pair(frame) -> bool:
    """Is the with-statement ``frame`` is entering written ``as (a, b)``?

    The instruction after the one calling ``__enter__`` stores its result: a
    two-name target unpacks it first (``UNPACK_SEQUENCE 2``).
    """
    for inst in dis.get_instructions(frame.f_code):
        if inst.offset > frame.f_lasti and inst.opname not in _SKIPPED:
            return inst.opname == "UNPACK_SEQUENCE" and inst.arg == 2
    return False
