"""Imports that resolve to nothing: not installed here, not the user's own code, not the server's.

``import pandas`` where pandas is absent looks, by the policy's location rule,
like the user's own code ("not found, so captured by value"); but there is
nothing to capture, and the server does not provide it either, so the import
fails remotely exactly as it fails here. The static checker and the closure
pass report it as NN204 instead of letting it through.

An import inside ``try:`` with a handler that catches ``ImportError`` (or a
broader class) is the code's own fallback for a missing module and is not
reported: on the server it fails with an ``ImportError`` too, which the same
handler catches.
"""
from __future__ import annotations

import importlib.util
import sys
from typing import Collection

from . import policy

CODE = "NN204"
TITLE = "module not found: not installed here and not provided by the server"
HINT = ("if it is your own code, run from the folder that holds it (or add that folder to PYTHONPATH) so "
        "it is sent by value; if it is a pure-Python package, install it and send it with "
        "nnsight.register(package); otherwise remove the import")

#: Exception names whose handler makes a ``try:`` body's imports optional.
IMPORT_GUARDS = frozenset(("ImportError", "ModuleNotFoundError", "Exception", "BaseException"))


def is_unresolved(name: str, local: Collection[str] = ()) -> bool:
    """Whether module ``name`` (absolute, dotted) resolves to nothing anywhere.

    ``local`` holds top-level names that are the user's own modules (found
    next to the checked file). Nothing is imported: only the top-level
    package is looked up, with the import system's finders.
    """
    top = name.split(".", 1)[0]
    if not top or top in local or top in sys.modules or name in sys.modules:
        return False
    if policy.classify_module(name) != policy.USER:
        return False  # the server's, refused or installed: other codes say so
    try:
        return importlib.util.find_spec(top) is None
    except (ImportError, ValueError):
        return True


def message(name: str) -> str:
    return "module '%s' is not installed here and is not provided by the server: importing it fails" % name
