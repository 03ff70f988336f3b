"""Mediators for vLLM: interventions on their own OS thread instead of a greenlet.

The base :class:`runtime.mediator.Mediator` runs an intervention on a greenlet
started where the trace starts, and switches into it only while that trace's
call is on the stack. A vLLM request's intervention outlives the engine step
that starts it and is resumed from other call chains (forward pass, logits,
sampling, the collect RPC). A greenlet's C stack is then no longer attached
below its first frame, and anything that unwinds the C stack from inside it --
every C++ exception torch raises records a backtrace (``c10::Error``) -- reads
garbage and crashes the process (observed: SIGSEGV in ``_Unwind_Backtrace`` on
an ``IndexError`` in an intervention).

:class:`ThreadWorker` gives the mediator the same ``switch`` / ``throw`` /
``parent.switch`` protocol over a thread with its own stack; hand-offs are
strict ping-pong (one side runs at a time), and the intervention runs in
``torch.inference_mode()`` like the engine. Everything else in the base
mediator is unchanged.
"""
import queue
import threading
from typing import Any

import torch
from greenlet import getcurrent

from runtime.mediator import Mediator

_VALUE, _THROW, _EVENT, _RETURN, _RAISE = range(5)


class _Parent:
    """``worker.parent`` as the intervention sees it: ``switch(event)`` waits for the answer."""

    __slots__ = ("worker",)

    def __init__(self, worker: "ThreadWorker") -> None:
        self.worker = worker

    def switch(self, event: Any) -> Any:
        w = self.worker
        w.to_main.put((_EVENT, event))
        kind, value = w.to_worker.get()
        if kind == _THROW:
            raise value
        return value


class ThreadWorker:
    """The greenlet protocol a :class:`Mediator` uses, backed by a daemon thread."""

    def __init__(self, run, mediator: Mediator) -> None:
        self.run = run
        self.mediator = mediator
        self.dead = False
        self.to_worker: "queue.SimpleQueue" = queue.SimpleQueue()
        self.to_main: "queue.SimpleQueue" = queue.SimpleQueue()
        self._parent = _Parent(self)
        self._thread = None

    @property
    def parent(self) -> _Parent:
        return self._parent

    @parent.setter
    def parent(self, _value: Any) -> None:
        pass  # answers always go back to whoever waits in switch()/throw()

    def switch(self, value: Any = None) -> Any:
        return self._send(_VALUE, value)

    def throw(self, error: BaseException) -> Any:
        if self._thread is None:  # never started: nothing to unwind
            self.dead = True
            raise error
        return self._send(_THROW, error)

    def _send(self, kind: int, value: Any) -> Any:
        if self.dead:
            raise RuntimeError("the intervention's thread has already finished")
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name=f"nnsight-{self.mediator.name}", daemon=True)
            self._thread.start()
        self.to_worker.put((kind, value))
        kind, value = self.to_main.get()
        if kind == _EVENT:
            return value
        self.dead = True
        self._thread = None
        if kind == _RAISE:
            raise value
        return value

    def _main(self) -> None:
        getcurrent().mediator = self.mediator  # current_mediator() in this thread
        kind, value = self.to_worker.get()
        try:
            with torch.inference_mode():
                if kind == _THROW:
                    raise value
                result = self.run(value)
        except BaseException as error:  # noqa: B902 - handed to the waiting side
            self.to_main.put((_RAISE, error))
        else:
            self.to_main.put((_RETURN, result))


class ThreadMediator(Mediator):
    """A :class:`Mediator` whose intervention runs on a :class:`ThreadWorker`."""

    __slots__ = ()

    def start(self, interleaver) -> None:
        self.interleaver = interleaver
        self._worker = ThreadWorker(self._run, self)
        self._resume(None)
