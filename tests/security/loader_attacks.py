"""Helpers of the loader attack tests: a real tiny GPT-2 served by the remote='local' server, requests
written by hand as an attacker would, and a check that a request leaves no trace."""
import os
import sys
import textwrap
from typing import Any, Dict, List, Optional

import psutil
import pytest
import torch

from compiler.ir import parse_program
from compiler.ir.request import Request, decode_result, encode_request
from compiler.ir.values import decode_value, encode_value
from nnsight.tracing.remote import LocalServer, model_key

PROMPT = "The Eiffel Tower is in"


def ir_text(body: str, bindings: str = "", definitions: str = "", assigned: List[str] = ("out",)) -> str:
    """An IR program for ``with model.trace(PROMPT): <body>``, written by hand.

    ``bindings``: extra ``binding`` lines; ``definitions``: ``definition`` blocks.
    The body stands at attack.py line 2, column 4.
    """
    lines = textwrap.dedent(body).strip("\n").split("\n")
    unit = "\n".join("  | " + line if line else "  |" for line in lines)
    names = ", ".join('"%s"' % n for n in assigned)
    return (
        'nnsight-ir 1\nproducer "attacker"\npython "3.11.7"\nmin-python 3.9\ndynamic false\n\n'
        'binding model model "model"\n%s\n'
        'unit 0 trace at "attack.py":2:4 parent=none header=1:1 assigned=[%s]\n%s\n\n%s'
        % (textwrap.dedent(bindings).strip("\n"), names, unit, textwrap.dedent(definitions).strip("\n")))


def payload(model: Any, text: str) -> bytes:
    program = parse_program(text)
    request = Request(program, model_key(model), "trace", encode_value((PROMPT,)), encode_value({}))
    return encode_request(request)


def serve(model: Any, data: bytes) -> Dict[str, Any]:
    """What remote='local' does with request bytes: decode, verify, load, run; the saved values."""
    server = LocalServer()
    key = model_key(model)
    server.host(key, model)
    return decode_value(decode_result(server.handle(data)))


def _snapshot_module(module: Any) -> Dict[str, int]:
    return {k: id(v) for k, v in vars(module).items()}


class Trace:
    """What a request must not change: files, processes, modules, the policy, the server's modules."""

    WATCHED = ("torch", "numpy", "math", "logging", "compiler.policy", "compiler.access", "runtime.loader",
               "builtins", "nnsight", "torch.nn", "torch.nn.functional", "operator", "types", "warnings")

    def __init__(self, tmp: str):
        import compiler.access  # noqa: F401
        import numpy  # noqa: F401
        import operator  # noqa: F401

        from compiler import policy

        self.tmp = tmp
        self.marker = os.path.join(tmp, "pwned")
        self.modules = dict(sys.modules)
        self.children = {p.pid for p in psutil.Process().children(recursive=True)}
        self.attrs = {name: _snapshot_module(sys.modules[name]) for name in self.WATCHED}
        self.registered = policy.registered()
        self.tensor_attrs = {k: id(v) for k, v in vars(torch.Tensor).items()}
        self.default_dtype = torch.get_default_dtype()
        self.handlers = {name: list(logging_logger(name).handlers) for name in ("", "x", "nnsight")}

    def check(self) -> None:
        from compiler import policy

        assert not os.path.exists(self.marker), "the payload wrote %s" % self.marker
        assert os.listdir(self.tmp) == [], "files appeared in %s: %s" % (self.tmp, os.listdir(self.tmp))
        new = {p.pid for p in psutil.Process().children(recursive=True)} - self.children
        assert not new, "processes were started: %s" % new
        added = set(sys.modules) - set(self.modules)
        assert not added, "modules were imported: %s" % sorted(added)
        changed = [n for n, m in self.modules.items() if sys.modules.get(n) is not m]
        assert not changed, "sys.modules entries changed: %s" % changed
        for name, before in self.attrs.items():
            assert _snapshot_module(sys.modules[name]) == before, "module %s was changed" % name
        assert policy.registered() == self.registered
        assert {k: id(v) for k, v in vars(torch.Tensor).items()} == self.tensor_attrs
        assert torch.get_default_dtype() == self.default_dtype
        for name, handlers in self.handlers.items():
            assert logging_logger(name).handlers == handlers


def logging_logger(name: str):
    import logging

    return logging.getLogger(name)


LEGIT = ir_text("out = model.transformer.h[0].output[0].sum().save()\n")



def marker_path(trace: Optional[Trace]) -> str:
    return trace.marker if trace is not None else "/nonexistent/pwned"
