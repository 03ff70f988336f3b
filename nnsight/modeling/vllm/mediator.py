"""Mediators for vLLM: interventions as greenlets on one dedicated thread, the hub.

The base :class:`runtime.mediator.Mediator` runs an intervention on a greenlet
started where the trace starts, and switches into it only while that trace's
call is on the stack. A vLLM request's intervention outlives the engine step
that starts it and is resumed from other call chains (forward pass, logits,
sampling, the collect RPC). A greenlet's C stack is then no longer attached
below its first frame, and anything that unwinds the C stack from inside it --
every C++ exception torch raises records a backtrace (``c10::Error``) -- reads
garbage and crashes the process (observed: SIGSEGV in ``_Unwind_Backtrace`` on
an ``IndexError`` in an intervention).

One OS thread per intervention avoids that, but every hand-off is then a thread
wake-up (about 10 µs on an idle machine, far more on a loaded one), and a decode
step hands off twice per request (the value, then the wait for the next step).

:class:`Hub`: one daemon thread per interleaver runs every intervention of the
engine as a greenlet. Whatever may resume an intervention (offering a provider's
value to the step's mediators, starting, finishing, cancelling) is one
:meth:`Hub.call` from the engine's thread, which waits for it: strict ping-pong
as before, but one thread wake-up per provider instead of one per mediator, and
greenlet switches (under a microsecond) between the mediators. On the hub,
the first switch into an intervention's greenlet, which fixes where its C stack
begins, is made by the hub's own loop (:meth:`Hub._main`, at the bottom of the
hub thread's stack, which never returns): the C stack below an intervention's
frames is always that loop, so unwinding from inside an intervention walks
valid frames. Everything else that runs on the hub (a hand-off's greenlet,
another intervention calling a hooked module) also began its stack at that
loop, so it resumes a started intervention directly and gets the answer back
directly (two greenlet switches per resume instead of four through the loop).

The hub enters ``torch.inference_mode()`` once, like the engine; everything else
in the base mediator is unchanged.
"""
import queue
import threading
from typing import Any, Optional

import torch
from greenlet import getcurrent, greenlet

from runtime.mediator import Mediator

# messages to the hub's loop: (_RUN, worker, value, requester) resumes an intervention; the
# intervention answers (_YIELD, event), or ends with (_FINISHED, result) / (_FAILED, error)
_RUN, _YIELD, _FINISHED, _FAILED, _DONE = range(5)


class _Throw:
    """A value that makes the resumed intervention raise ``error`` where it waits."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Hub:
    """The thread every intervention of one interleaver runs on (see the module docstring)."""

    def __init__(self) -> None:
        self._inbox: "queue.SimpleQueue" = queue.SimpleQueue()
        self._outbox: "queue.SimpleQueue" = queue.SimpleQueue()
        self._lock = threading.Lock()  # one caller at a time (the engine's thread, an RPC thread...)
        self._thread: Optional[threading.Thread] = None
        self._ident: Optional[int] = None
        self.root: Any = None  # the hub thread's main greenlet: the loop
        self.calls = 0  # thread hand-offs so far (each one call from another thread)

    def call(self, fn, *args) -> Any:
        """``fn(*args)`` on the hub: at once when already there, else by a hand-off (waits)."""
        if threading.get_ident() == self._ident:
            return fn(*args)
        with self._lock:
            if self._thread is None:
                started = threading.Event()
                self._thread = threading.Thread(target=self._main, args=(started,), name="nnsight-interventions",
                                                daemon=True)
                self._thread.start()
                started.wait()
            self.calls += 1
            self._inbox.put((fn, args))
            ok, value = self._outbox.get()
        if ok:
            return value
        raise value

    @staticmethod
    def _drive(item) -> tuple:
        fn, args = item
        try:
            return (_DONE, (True, fn(*args)))
        except BaseException as error:  # noqa: B902 - re-raised in the calling thread
            return (_DONE, (False, error))

    def _main(self, started: threading.Event) -> None:
        root = self.root = getcurrent()
        self._ident = threading.get_ident()
        started.set()
        waiting = []  # (worker, requester) of the interventions resumed, innermost last
        with torch.inference_mode():
            while True:
                item = self._inbox.get()
                try:
                    msg = greenlet(self._drive, root).switch(item)
                    while True:
                        tag = msg[0]
                        if tag == _RUN:
                            waiting.append((msg[1], msg[3]))
                            # every switch into an intervention comes from this loop (see the docstring)
                            msg = msg[1].greenlet.switch(msg[2])
                        elif tag == _DONE:
                            break
                        else:  # the intervention resumed last answers: back to whoever resumed it
                            _, requester = waiting.pop()
                            msg = requester.switch(msg)
                    reply = msg[1]
                except BaseException as error:  # noqa: B902 - a broken hand-off: the caller must not wait forever
                    waiting.clear()
                    reply = (False, RuntimeError(f"the vLLM intervention hub failed: {type(error).__name__}: {error}"))
                self._outbox.put(reply)


class _Parent:
    """``worker.parent`` as the intervention sees it: ``switch(event)`` hands ``event`` to whoever
    resumed the intervention (``back``: the hub's loop for its first run, then the resumer itself)
    and waits for the answer."""

    __slots__ = ("back",)

    def __init__(self, root) -> None:
        self.back = root

    def switch(self, event: Any) -> Any:
        value = self.back.switch((_YIELD, event))
        if type(value) is _Throw:
            raise value.error
        return value


class HubWorker:
    """The greenlet protocol a :class:`Mediator` uses (``switch``, ``throw``, ``parent``, ``dead``),
    for an intervention on the :class:`Hub`. Used only on the hub's thread."""

    __slots__ = ("run", "mediator", "hub", "greenlet", "dead", "_parent")

    def __init__(self, run, mediator: Mediator, hub: Hub) -> None:
        self.run = run
        self.mediator = mediator
        self.hub = hub
        self.greenlet: Any = None
        self.dead = False
        self._parent = _Parent(hub.root)

    @property
    def parent(self) -> _Parent:
        return self._parent

    @parent.setter
    def parent(self, _value: Any) -> None:
        pass  # answers always go back to whoever resumed it (the hub's loop keeps track)

    def switch(self, value: Any = None) -> Any:
        return self._send(value)

    def throw(self, error: BaseException) -> Any:
        if self.greenlet is None:  # never started: nothing to unwind
            self.dead = True
            raise error
        return self._send(_Throw(error))

    def _send(self, value: Any) -> Any:
        if self.dead:
            raise RuntimeError("the intervention has already finished")
        running = self.greenlet
        if running is None:
            # The first switch into a greenlet fixes where its C stack begins: made by the hub's loop,
            # at the bottom of the hub thread's stack (module docstring), like every other start.
            root = self.hub.root
            running = self.greenlet = greenlet(self._body, root)
            self._parent.back = root
            msg = root.switch((_RUN, self, value, getcurrent()))
        else:
            # Resumed from the hub thread by code that itself runs above the loop (a hand-off's
            # greenlet, or another intervention): its stack begins where it did, below the loop's
            # frames, so it can be switched to directly -- two greenlet switches instead of four.
            # Its answers, or its end (its parent), come straight back here.
            me = getcurrent()
            self._parent.back = me
            running.parent = me
            try:
                msg = running.switch(value)
            finally:
                if not running.dead:
                    running.parent = self.hub.root
        if msg[0] == _YIELD:
            return msg[1]
        self.dead = True
        self.greenlet = None
        if msg[0] == _FAILED:
            raise msg[1]
        return msg[1]

    def _body(self, value: Any) -> tuple:
        getcurrent().mediator = self.mediator  # current_mediator() in the intervention
        try:
            if type(value) is _Throw:
                raise value.error
            return (_FINISHED, self.run(value))
        except BaseException as error:  # noqa: B902 - handed to whoever resumed it
            return (_FAILED, error)


class HubMediator(Mediator):
    """A :class:`Mediator` whose intervention runs on its interleaver's :class:`Hub`.

    Its methods that resume the intervention are called on the hub (the interleaver sees to it).
    """

    __slots__ = ()

    def start(self, interleaver) -> None:
        self.interleaver = interleaver
        self._worker = HubWorker(self._run, self, interleaver.hub)
        self._resume(None)
