"""The hub thread's greenlet protocol, without an engine.

An intervention's first run starts on the hub's loop; later resumes come straight from whatever
runs on the hub (a hand-off, or another intervention resuming one in turn), and its answers,
errors and end go straight back there. torch's C++ errors raised in a directly resumed
intervention unwind its stack (they record a backtrace) without harm.
"""
import pytest
import torch
from greenlet import getcurrent

from nnsight.modeling.vllm.mediator import Hub, HubWorker

pytestmark = [pytest.mark.vllm]


class _Owner:
    """What HubWorker needs of a mediator (``current_mediator()`` reads it)."""


def _worker(hub: Hub, run) -> HubWorker:
    return HubWorker(run, _Owner(), hub)


def _started() -> Hub:
    """A hub whose thread runs (the engine's interventions are made once it does)."""
    hub = Hub()
    hub.call(lambda: None)
    return hub


def _echo(worker_ref, log, name):
    """An intervention that answers each value with ``(name, value)`` until it gets "stop"."""
    def run(value):
        while value != "stop":
            log.append((name, value))
            if value == "cxx":
                torch.zeros(2) + torch.zeros(3)  # a c10::Error, re-raised as RuntimeError
            value = worker_ref[0].parent.switch((name, value))
        return name + " done"
    return run


def test_resumes_after_the_first_run_are_direct_and_answers_come_back():
    hub = _started()
    log = []
    a_ref, b_ref = [None], [None]
    a = a_ref[0] = _worker(hub, _echo(a_ref, log, "a"))
    b = b_ref[0] = _worker(hub, _echo(b_ref, log, "b"))
    assert hub.call(a.switch, 1) == ("a", 1)  # first run: through the loop
    assert a.parent.back is hub.root
    assert hub.call(b.switch, 1) == ("b", 1)
    assert hub.call(a.switch, 2) == ("a", 2)  # later: resumed directly by the hand-off's greenlet
    assert a.parent.back is not hub.root
    assert a.greenlet.parent is hub.root  # back to the loop between resumes

    def nested():  # an intervention resumes a from inside itself (as when it calls a hooked module)
        inner_ref = [None]

        def run(value):
            got = a.switch(value)
            assert getcurrent() is inner_ref[0].greenlet  # a's answer came straight back here
            return inner_ref[0].parent.switch(("inner saw", got))

        inner = inner_ref[0] = _worker(hub, run)
        return inner.switch(3)

    assert hub.call(nested) == ("inner saw", ("a", 3))
    assert log == [("a", 1), ("b", 1), ("a", 2), ("a", 3)]
    assert hub.call(a.switch, "stop") == "a done" and a.dead
    assert hub.call(b.switch, "stop") == "b done" and b.dead
    assert hub.calls == 7


def test_cxx_errors_in_directly_resumed_interventions_reach_the_resumer():
    hub = _started()
    log = []
    ref = [None]
    w = ref[0] = _worker(hub, _echo(ref, log, "w"))
    assert hub.call(w.switch, 0) == ("w", 0)
    for step in range(1, 30):
        assert hub.call(w.switch, step) == ("w", step)
    with pytest.raises(RuntimeError):
        hub.call(w.switch, "cxx")
    assert w.dead
    # the hub goes on: a new intervention starts and runs
    ref2 = [None]
    w2 = ref2[0] = _worker(hub, _echo(ref2, log, "w2"))
    assert hub.call(w2.switch, 0) == ("w2", 0)
    assert hub.call(w2.switch, 1) == ("w2", 1)


def test_throw_into_a_directly_resumed_intervention_unwinds_it():
    hub = _started()
    unwound = []
    ref = [None]

    def run(value):
        try:
            while True:
                value = ref[0].parent.switch(("asked", value))
        except KeyError as error:
            unwound.append(error)
            raise

    w = ref[0] = _worker(hub, run)
    hub.call(w.switch, 0)
    hub.call(w.switch, 1)
    with pytest.raises(KeyError):
        hub.call(w.throw, KeyError("stop here"))
    assert w.dead and len(unwound) == 1
