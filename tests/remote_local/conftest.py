"""Fixtures of the remote='local' tests: user libraries that are not installed, small models."""
import importlib
import os
import sys

import pytest

from remote_helpers import make_mlp, relative  # noqa: F401  (shared with the tests)
import torch

import remote_libsrc as libsrc

LIB_MODULES = ("mymethods", "mytools", "badlib", "scenarios", "fakepkg")


@pytest.fixture(scope="session")
def libdir(tmp_path_factory):
    """A directory on sys.path holding the user libraries of :mod:`libsrc` (not installed)."""
    root = tmp_path_factory.mktemp("userlib")
    for name, text in libsrc.FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    sys.path.insert(0, str(root))
    sys.path.insert(1, str(root / "site-packages"))
    importlib.invalidate_caches()
    yield root
    for entry in (str(root), str(root / "site-packages")):
        if entry in sys.path:
            sys.path.remove(entry)
    for name in list(sys.modules):
        if name.split(".")[0] in LIB_MODULES:
            del sys.modules[name]


@pytest.fixture(scope="session")
def mm(libdir):
    return importlib.import_module("mymethods")


@pytest.fixture(scope="session")
def mytools(libdir):
    return importlib.import_module("mytools")


@pytest.fixture(scope="session")
def badlib(libdir):
    return importlib.import_module("badlib")


@pytest.fixture(scope="session")
def scenarios(libdir):
    return importlib.import_module("scenarios")


@pytest.fixture
def mlp():
    from nnsight import NNsight

    return NNsight(make_mlp())


@pytest.fixture
def x():
    torch.manual_seed(1)
    return torch.randn(3, 8)


@pytest.fixture(scope="session")
def gpt2(gpt2_path):
    from nnsight import LanguageModel

    return LanguageModel(gpt2_path)


