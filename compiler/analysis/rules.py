"""Name tables of the checker that are not server policy (see :mod:`compiler.policy` for that)."""
from __future__ import annotations

# NN302: harmless locally, but need a terminal the server does not have.
INTERACTIVE_BUILTINS = frozenset(("breakpoint", "input"))

# NN303: show the namespace the code runs in, which on the server is rebuilt
# from the captured bindings (not the user's module); writes are not written back.
NAMESPACE_BUILTINS = frozenset(("globals", "locals", "vars"))

# NN403: builtins that take an attribute name as a string (getattr and hasattr are only
# reported for refused names: ``hasattr(x, "__iter__")`` is a protocol check).
ATTR_BUILTINS = frozenset(("getattr", "setattr", "delattr", "hasattr"))

# NN402 / NN403: which attributes are refused is server policy: compiler.access (one table with
# the server's loader).

# Calls of these look like tracing contexts to ``nnsight-compile emit``.
TRACING_METHODS = frozenset(("trace", "generate", "session", "scan", "edit", "pipe"))
