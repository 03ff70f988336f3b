"""``with model.session():`` — several traces as one program.

A session's body runs on the main side (not as an intervention): ordinary
Python between traces works, and every trace, generation or edit inside it is
a nested tracing context that claims its unit of the session's program. All
of them run in the session's namespace, so a value computed in one trace is a
plain variable of the next one — no ``.save()`` needed to share it::

    with model.session():
        with model.trace("Megan Rapinoe plays the sport of"):
            hs = model.model.layers[1].output[:, 5, :]        # not saved: session-local
        with model.trace("Shaquille O'Neal plays the sport of"):
            model.model.layers[1].output[:, 6, :] = hs
            out = model.lm_head.output[0][-1].argmax(dim=-1).save()
    print(out)       # saved: written back when the session closes
    # `hs` is not defined here

Only saved values survive the session: ``.save()`` marks stay valid until the
outermost tracing context closes, and the session writes the saved variables
(of its own body and of every trace in it) back into the caller's frame.
``remote='local'`` runs the whole session as one request through the simulated
server (nnsight/tracing/remote.py); options are kept in ``session.options``.
"""
from typing import Any, Dict

from .base import Tracer


class Session(Tracer):
    """A tracing context whose body is plain code run on the main side, traces included."""

    def __init__(self, model=None, **options) -> None:
        super().__init__(model)
        self.options = options
        if options.get("remote") is not None:  # the whole session is one request
            from .remote import check_remote

            self._remote = check_remote(options["remote"])
            self._blocking = bool(options.get("blocking", True))

    def execute(self, ns: Dict[str, Any]) -> None:
        exec(self._code(), ns)


class SessionMixin:
    """``model.session()`` on root models."""

    def session(self, **options) -> Session:
        """``with model.session():`` — run several traces that share variables."""
        return Session(self, **options)
