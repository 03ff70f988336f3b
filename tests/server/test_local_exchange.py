"""The server's side of tracer.local() blocks treats the client's bytes as hostile (no server process)."""
import threading

import pytest
import torch

from compiler.ir import FACT_LOCAL, CodeUnit, SourceLoc
from compiler.ir.values import decode_value
from runtime.local_blocks import (LocalBlockError, LocalBlocks, LocalBlockTimeout, encode_reply, frame_reply)
from runtime.server.events import EventHub
from runtime.server.local_exchange import LocalExchange

UNIT = CodeUnit(id=1, kind="block", source="new = f(h)\n", loc=SourceLoc("t.py", 5, 8), parent=0,
                header=(4, 4), assigned=("new",), facts=(FACT_LOCAL,), reads=("h",))


def _answer_later(exchange, job_id, message, delay=0.05):
    def run():
        import time

        time.sleep(delay)
        run.refused = exchange.deliver(job_id, message)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, run


def test_a_reply_reaches_only_the_jobs_own_pending_block():
    exchange = LocalExchange(EventHub(), timeout_s=5.0, max_bytes=1000)
    assert exchange.deliver("job-a", frame_reply(1, b"x")) is not None  # nothing pending
    wrong_job, wrong = _answer_later(exchange, "job-b", frame_reply(1, b"body"), 0.02)
    wrong_block, stale = _answer_later(exchange, "job-a", frame_reply(7, b"body"), 0.02)
    right, ok = _answer_later(exchange, "job-a", frame_reply(1, b"body"), 0.2)
    assert exchange.ask("job-a", 1, b"values") == b"body"
    for thread in (wrong_job, wrong_block, right):
        thread.join()
    assert wrong.refused and stale.refused and ok.refused is None
    assert exchange.deliver("job-a", frame_reply(1, b"again")) is not None  # answered once only


def test_oversized_and_malformed_replies_are_refused_and_the_job_times_out():
    exchange = LocalExchange(EventHub(), timeout_s=0.3, max_bytes=16)  # (nobody follows: 0.3 s)
    big, big_run = _answer_later(exchange, "job", frame_reply(1, b"y" * 100))
    junk, junk_run = _answer_later(exchange, "job", b"not a reply")
    with pytest.raises(LocalBlockTimeout, match="did not answer local block 1"):
        exchange.ask("job", 1, b"values")
    big.join(), junk.join()
    assert "limit" in big_run.refused and "LOCAL_RESULT" in junk_run.refused


def _blocks(reply: bytes) -> LocalBlocks:
    return LocalBlocks(lambda block, message: reply, decode_value)


def test_the_reply_may_only_set_the_blocks_names():
    ns = {"h": torch.zeros(2), "secret": 1}
    with pytest.raises(LocalBlockError, match="does not assign or read"):
        _blocks(encode_reply(1, {"secret": 2}, [])).run(UNIT, ns)
    with pytest.raises(LocalBlockError, match="does not answer local block 1"):
        _blocks(encode_reply(2, {"new": 1}, [])).run(UNIT, ns)
    with pytest.raises(LocalBlockError, match="malformed"):
        _blocks(b"NNRS garbage").run(UNIT, ns)
    assert ns["secret"] == 1


def test_the_reply_binds_assigned_names_and_writes_read_tensors_in_place():
    h = torch.zeros(3)
    ns = {"h": h}
    _blocks(encode_reply(1, {"new": 5, "h": torch.ones(3)}, [])).run(UNIT, ns)
    assert ns["new"] == 5 and ns["h"] is h and torch.equal(h, torch.ones(3))


def test_the_clients_error_stops_the_job():
    with pytest.raises(LocalBlockError, match="ZeroDivisionError: division by zero"):
        _blocks(encode_reply(1, {}, [], error=ZeroDivisionError("division by zero"))).run(UNIT, {"h": 1})


def test_a_block_whose_client_left_ends_at_once():
    exchange = LocalExchange(EventHub(), timeout_s=30.0, max_bytes=16)

    def leave():
        import time

        time.sleep(0.05)
        exchange.abandon("job")

    thread = threading.Thread(target=leave)
    thread.start()
    with pytest.raises(LocalBlockError, match="client disconnected"):
        exchange.ask("job", 1, b"values")
    thread.join()


def test_a_block_nobody_follows_ends_after_the_grace_period():
    import time

    exchange = LocalExchange(EventHub(), timeout_s=30.0, max_bytes=16, unfollowed_s=0.2)
    started = time.monotonic()
    with pytest.raises(LocalBlockTimeout):
        exchange.ask("job", 1, b"values")
    assert time.monotonic() - started < 5
