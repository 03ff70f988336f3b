"""The guard's check of attribute values for hosted-memory aliases remembers types whose instances
pass by their type alone (runtime/loader/hosted_memory.py: HostedMemory.checked). What it remembers
must never let a numpy callable through unchecked."""
import numpy as np
import torch

from runtime.loader.hosted_memory import HostedMemory


def _memory():
    return HostedMemory(torch.nn.Linear(4, 4))


def test_instances_of_a_remembered_type_pass_as_they_are():
    memory = _memory()
    x = torch.zeros(2)
    assert memory.checked(x) is x
    assert memory.checked(x) is x  # (the remembered path)
    assert type(x) in memory._passing


def test_numpy_callables_stay_checked_whatever_was_remembered():
    memory = _memory()
    memory.checked(torch.zeros(2))
    for value in (np.asarray, np.add, np.ma.add, np.frombuffer):
        checked = memory.checked(value)
        assert checked is not value, value
        assert type(value) not in memory._passing


def test_a_type_whose_module_becomes_numpy_is_asked_again():
    memory = _memory()

    class Callable:
        def __call__(self, *args):
            return args

    obj = Callable()
    assert memory.checked(obj) is obj
    Callable.__module__ = "numpy.lib.fake"
    checked = memory.checked(obj)
    assert checked is not obj, "a callable whose type now says numpy must be wrapped"
    weight = memory.model.weight
    try:
        checked(weight)
    except Exception as error:
        assert "hosted model" in str(error), error
    else:
        raise AssertionError("a hosted weight reached a numpy callable unchecked")


def test_a_str_subclass_module_is_not_compared_with_its_own_eq():
    memory = _memory()
    calls = []

    class Sly(str):
        def __eq__(self, other):
            calls.append(other)
            return True

        __hash__ = str.__hash__

    class Thing:
        pass

    thing = Thing()
    assert memory.checked(thing) is thing
    Thing.__module__ = Sly("numpy")
    memory.checked(thing)
    assert calls == [], "the check ran the module name's own __eq__"
