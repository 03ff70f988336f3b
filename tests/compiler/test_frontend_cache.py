"""compiler.frontend.cache: per-call-site program cache."""
import sys

import pytest

from compiler.frontend import cache
from compiler.frontend.capture import CapturedSource
from compiler.frontend.errors import WithBlockNotFoundError


class Grab:
    programs = []

    def __enter__(self):
        self.programs.append(cache.program_for_frame(sys._getframe(1)))
        return self

    def __exit__(self, *exc):
        return False


def _site(n):
    with Grab():
        y = n + 1
    return y


def test_same_site_hits_the_cache():
    cache.clear()
    Grab.programs.clear()
    for i in range(3):
        _site(i)
    with Grab():
        z = 2  # noqa: F841
    first, second, third, other = Grab.programs
    assert first is second is third and other is not first
    assert first.root.source == "y = n + 1\n" and other.root.source == "z = 2  # noqa: F841\n"
    assert cache.size() == 2
    cache.clear()
    assert cache.size() == 0


def test_lower_cached_and_errors_not_cached(monkeypatch):
    cache.clear()
    calls = []

    def make():
        calls.append(1)
        return CapturedSource("with a:\n    b = 1\n", "f.py")

    p1 = cache.lower_cached(("k", 1), make, 1)
    p2 = cache.lower_cached(("k", 1), make, 1)
    assert p1 is p2 and len(calls) == 1
    for _ in range(2):
        with pytest.raises(WithBlockNotFoundError):
            cache.lower_cached(("k", 2), make, 2)
    assert len(calls) == 3


def test_bounded(monkeypatch):
    cache.clear()
    monkeypatch.setattr(cache._cache, "bound", 3)  # (the LRU made with MAX_ENTRIES)
    src = CapturedSource("with a:\n    b = 1\n", "f.py")
    for k in range(5):
        cache.lower_cached(k, lambda: src, 1)
    assert cache.size() == 3
    cache.clear()
