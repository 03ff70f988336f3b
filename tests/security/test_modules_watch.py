"""The view of sys.modules that keeps the accept path's caches valid (runtime/loader/modules_watch.py).

Whatever changes ``sys.modules`` must show: an import at once, an entry added or removed by hand at
once, an entry replaced by hand (the one change neither an import nor the count shows) within
FULL_CHECK_S. And nothing else may cost a full comparison.
"""
import sys
import time
import types

import pytest

from runtime.loader import modules_watch
from runtime.loader.modules_watch import IMPORTS, ModulesWatch


@pytest.fixture
def watch():
    w = ModulesWatch()
    assert w.changed(), "the first call has nothing to compare with"
    assert not w.changed()
    return w


def _fake_clock(monkeypatch):
    """A monotonic clock the test moves, starting well past every real reading so far."""
    clock = [time.monotonic() + 1e6]
    monkeypatch.setattr(modules_watch.time, "monotonic", lambda: clock[0])
    return clock


def test_nothing_changed_costs_no_full_comparison(watch):
    before = watch.full_checks
    for _ in range(1000):
        assert not watch.changed()
    assert watch.full_checks == before


def test_an_import_shows_at_once(watch, tmp_path, monkeypatch):
    (tmp_path / "watch_probe_import.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__("watch_probe_import")
    try:
        assert watch.changed()
        assert not watch.changed()
    finally:
        sys.modules.pop("watch_probe_import", None)
    assert watch.changed(), "a removed module shows"


def test_a_failed_import_compares_but_keeps_the_view(watch):
    with pytest.raises(ImportError):
        __import__("no_such_module_anywhere_%d" % id(watch))
    before = watch.full_checks
    assert not watch.changed(), "nothing was added"
    assert watch.full_checks == before + 1


def test_entries_added_by_hand_show_at_once(watch):
    sys.modules["watch_probe_module"] = types.ModuleType("watch_probe_module")
    try:
        assert watch.changed()
    finally:
        del sys.modules["watch_probe_module"]
    assert watch.changed()


def test_an_entry_replaced_by_hand_shows_within_the_full_check_time(watch, monkeypatch):
    name = next(iter(sys.modules))
    original = sys.modules[name]
    clock = _fake_clock(monkeypatch)
    watch.changed()  # a full comparison at the fake time (past the real one)
    assert not watch.changed()
    sys.modules[name] = types.ModuleType(name)
    try:
        assert not watch.changed(), "within FULL_CHECK_S the count is trusted"
        clock[0] += modules_watch.FULL_CHECK_S
        assert watch.changed(), "after FULL_CHECK_S the entries are compared"
    finally:
        sys.modules[name] = original
    clock[0] += modules_watch.FULL_CHECK_S
    assert watch.changed()


def test_a_sealed_view_is_trusted_once_whatever_the_time(watch, monkeypatch):
    clock = _fake_clock(monkeypatch)
    watch.changed()
    watch.seal()
    clock[0] += 100 * modules_watch.FULL_CHECK_S
    before = watch.full_checks
    assert not watch.changed()
    assert watch.full_checks == before, "the sealed call compared"
    assert not watch.changed()
    assert watch.full_checks == before + 1, "the seal lasts one call"


def test_a_rebuilt_meta_path_is_counted_again(watch):
    saved = list(sys.meta_path)
    sys.meta_path[:] = [f for f in saved if f is not IMPORTS]
    try:
        before = watch.full_checks
        assert not watch.changed()
        assert watch.full_checks == before + 1, "without the counter the entries are compared"
        assert sys.meta_path[0] is IMPORTS
    finally:
        sys.meta_path[:] = saved


def test_the_refusal_table_covers_a_module_replaced_by_hand(monkeypatch):
    """A refused entry point of a module swapped into sys.modules by hand (``uuid.getnode``, a new
    function object under a refused path) is refused once the replacement shows: here, after the
    full-check time."""
    import uuid

    from runtime.loader import refusal_table

    clock = _fake_clock(monkeypatch)
    first = refusal_table.current()
    assert refusal_table.current() is first
    assert id(uuid.getnode) in first.refused_ids

    def getnode():  # never called
        raise AssertionError

    fake = types.ModuleType("uuid")
    fake.__dict__.update(uuid.__dict__)
    fake.getnode = getnode
    monkeypatch.setitem(sys.modules, "uuid", fake)
    assert refusal_table.current() is first, "within FULL_CHECK_S the count is trusted"
    clock[0] += modules_watch.FULL_CHECK_S
    table = refusal_table.current()
    assert table is not first and id(getnode) in table.refused_ids
