"""Snapshots of dictionaries, sets and class namespaces by identity, and the check that they are
as they were: the building blocks of :mod:`runtime.integrity`.

Identity, never equality: a value put in place by a request could define ``__eq__`` (and say it
is equal, or run code while the check runs). :class:`FlatState` checks many dictionaries in one
C-level pass each for lengths, keys and values: the per-dictionary Python calls cost more than
the comparisons (about 1 us a dictionary against 10-20 ns an entry).
"""
import operator
from itertools import chain
from typing import Any, Dict, Iterator, List, Sequence, Tuple

_is = operator.is_
_MISSING = object()


class DictState:
    """A dictionary's keys and values, by identity."""

    __slots__ = ("d", "keys", "values")

    def __init__(self, d: Dict[Any, Any]) -> None:
        self.d = d
        self.keys = tuple(d)
        self.values = tuple(d.values())

    def same(self) -> bool:
        d = self.d
        return len(d) == len(self.keys) and all(map(_is, d, self.keys)) and all(map(_is, d.values(), self.values))

    def differences(self, grown_ok: bool = False) -> Iterator[Tuple[str, Any]]:
        """``(what, key)`` for each key added, removed or rebound."""
        old = dict(zip(self.keys, self.values))
        for key in list(self.d):
            if key not in old and not (grown_ok and not _dunder(key)):
                yield "added", key
        for key, value in old.items():
            now = self.d.get(key, _MISSING)
            if now is _MISSING:
                yield "removed", key
            elif now is not value:
                yield "rebound", key

    def restore(self, grown_ok: bool = False) -> None:
        d = self.d
        old = set(self.keys)
        for key in [k for k in d if k not in old and not (grown_ok and not _dunder(k))]:
            del d[key]
        for key, value in zip(self.keys, self.values):
            if d.get(key, _MISSING) is not value:
                d[key] = value


def _dunder(key: Any) -> bool:
    return isinstance(key, str) and key.startswith("__") and key.endswith("__")


class SetState:
    __slots__ = ("s", "items")

    def __init__(self, s: set) -> None:
        self.s = s
        self.items = frozenset(s)

    def same(self) -> bool:
        return len(self.s) == len(self.items) and self.s == self.items

    def restore(self) -> None:
        self.s.clear()
        self.s.update(self.items)


class ClassState:
    """A class's attributes (its mappingproxy cannot be written directly: restored by setattr)."""

    __slots__ = ("cls", "state")

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.state = DictState(dict(vars(cls)))

    def same(self) -> bool:
        now = vars(self.cls)
        state = self.state
        return len(now) == len(state.keys) and all(map(_is, now, state.keys)) \
            and all(map(_is, now.values(), state.values))

    def differences(self) -> Iterator[Tuple[str, Any]]:
        now = vars(self.cls)
        old = dict(zip(self.state.keys, self.state.values))
        for key in now:
            if key not in old and _dunder(key):  # (libraries add plain names to nn.Module as they load)
                yield "added", key
        for key, value in old.items():
            if now.get(key, _MISSING) is _MISSING:
                yield "removed", key
            elif now[key] is not value:
                yield "rebound", key

    def restore(self) -> None:
        for what, key in list(self.differences()):
            if what == "added":
                delattr(self.cls, key)
            else:
                type.__setattr__(self.cls, key, dict(zip(self.state.keys, self.state.values))[key])


class FlatState:
    """Several :class:`DictState` checked at once (their dictionaries' lengths, keys and values)."""

    __slots__ = ("dicts", "lengths", "keys", "values")

    def __init__(self, states: Sequence[DictState]) -> None:
        self.dicts: List[Dict[Any, Any]] = [state.d for state in states]
        self.lengths = tuple(len(state.keys) for state in states)
        self.keys = tuple(chain.from_iterable(state.keys for state in states))
        self.values = tuple(chain.from_iterable(state.values for state in states))

    def same(self) -> bool:
        dicts = self.dicts
        return (tuple(map(len, dicts)) == self.lengths  # (exact ints: the boundaries line up)
                and all(map(_is, chain.from_iterable(dicts), self.keys))
                and all(map(_is, chain.from_iterable(map(dict.values, dicts)), self.values)))
