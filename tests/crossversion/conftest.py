"""Fixtures of the cross-version tests (see docs/portability.md).

``clients``: one compile driver per client CPython (3.9-3.13), from the virtualenvs that
``scripts/pyenvs.sh`` creates once and caches; the tests skip, naming what is missing, only when
a CPython version is not installed. ``mlp``: the model every program runs on.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import xvsupport as xv  # noqa: E402


@pytest.fixture(scope="session")
def client_pythons():
    pythons, messages = xv.client_pythons()
    xv.require_all_versions(pythons, messages)
    return pythons


@pytest.fixture(scope="session")
def clients(client_pythons):
    c = xv.Clients(client_pythons)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def mlp():
    return xv.make_model()
