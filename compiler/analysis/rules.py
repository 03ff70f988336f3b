"""Name tables of the checker that are not server policy (see :mod:`compiler.policy` for that)."""
from __future__ import annotations

# NN302: harmless locally, but need a terminal the server does not have.
INTERACTIVE_BUILTINS = frozenset(("breakpoint", "input"))

# NN303: show the namespace the code runs in, which on the server is rebuilt
# from the captured bindings (not the user's module); writes are not written back.
NAMESPACE_BUILTINS = frozenset(("globals", "locals", "vars"))

# NN403: builtins that take an attribute name as a string (hasattr is only
# reported for INTROSPECTION_ATTRIBUTES: ``hasattr(x, "__iter__")`` is a protocol check).
ATTR_BUILTINS = frozenset(("getattr", "setattr", "delattr", "hasattr"))

# NN402 / NN403: attributes that reach interpreter internals (the classic
# sandbox escapes: function globals, code objects, frames, the subclass list).
INTROSPECTION_ATTRIBUTES = frozenset((
    "__globals__", "__code__", "__closure__", "__builtins__", "__subclasses__",
    "__import__", "__loader__",
    "f_globals", "f_locals", "f_builtins", "f_back", "f_code",
    "gi_frame", "gi_code", "cr_frame", "cr_code", "ag_frame", "ag_code",
    "tb_frame", "co_code",
))

# Calls of these look like tracing contexts to ``nnsight-compile emit``.
TRACING_METHODS = frozenset(("trace", "generate", "session", "scan", "edit", "pipe"))
