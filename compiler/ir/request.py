"""A remote request: a complete Program plus the call the server makes, and the reply.

A :class:`Request` is what a client sends to run one tracing context remotely
(``model.trace(..., remote=...)``, a session, ...): the closed program (every
binding resolved, user code captured by value), the key of the model it runs
on, the tracing method (``"trace"``, ``"session"``, ``"generate"``...) and that
call's inputs as value trees. The server answers with a result: the saved
variables by name, as one value tree (so sharing between them is kept).

Binary layouts (deterministic, like :mod:`.binary`)::

    request: b"NNRQ" | uint32 H | H bytes msgpack header | zstd(msgpack body)
             header: the program's header record (``ir_version`` first), read and
                     version-checked before the body is decompressed
             body:   {"program": program record without header, "model": str,
                      "method": str, "args": tree, "kwargs": tree}
    result:  b"NNRS" | zstd(msgpack {"version": 1 | 2, "saved": tree})
             version 2: the tree holds ``mapping`` nodes (mapping records such as a
             transformers ``ModelOutput``); any other result is written as version 1,
             so a client that predates mapping records reads it unchanged
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional

from . import framing
from .binary import check_plain
from .downgraders import downgrade
from .errors import IRDecodeError, IRError
from .limits import DecodeLimits, limits_or_default
from .nodes import Program
from .printer import format_literal, print_program, quote
from .upgraders import check_version, from_record, to_record, upgrade
from .values import plain_problem

REQUEST_MAGIC = b"NNRQ"
RESULT_MAGIC = b"NNRS"
RESULT_VERSION = 2
# the oldest result version still written (results without mapping records) and read
RESULT_VERSION_PLAIN = 1


@dataclass(frozen=True)
class Request:
    """One remote execution.

    program: the closed program (see :mod:`compiler.closure`).
    model: the server's key of the model, ``"module.Class:{json}"``.
    method: the tracing method the server opens (``"trace"``, ``"session"``...).
    args / kwargs: value trees of that call's positional (a tuple tree) and
      keyword (a dict tree) arguments.
    """

    program: Program
    model: str
    method: str = "trace"
    args: Any = ("tuple",)
    kwargs: Any = ("dict",)

    def __post_init__(self) -> None:
        # value trees are lists; accept the tuple defaults above
        for name in ("args", "kwargs"):
            v = getattr(self, name)
            if isinstance(v, tuple):
                object.__setattr__(self, name, list(v))


def encode_request(r: Request, ir_version: Optional[int] = None) -> bytes:
    """The binary form of a request (same request -> same bytes).

    ``ir_version``: write the program in that older version (a server that accepts no newer one);
    raises :class:`IRVersionError` when the program needs a newer one (:mod:`.downgraders`).
    """
    for name in ("args", "kwargs"):
        problem = plain_problem(getattr(r, name), name)
        if problem:
            raise IRError("cannot encode request: %s" % problem)
    if not isinstance(r.model, str) or not isinstance(r.method, str):
        raise IRError("cannot encode request: model and method must be strings")
    check_plain(r.program)
    record = to_record(r.program)
    if ir_version is not None and ir_version != record["header"]["ir_version"]:
        record = downgrade(record, ir_version)
    header = record.pop("header")
    raw = framing.pack({"program": record, "model": r.model, "method": r.method, "args": r.args,
                        "kwargs": r.kwargs})
    return framing.wrap(REQUEST_MAGIC, header, framing.compress(raw, _level(len(raw))))


def _level(size: int) -> int:
    """zstd level of a request body by size: small ones (code) are squeezed hard, big ones fast.

    Level 19 costs ~0.1 ms per KiB (2 ms for 24 KiB) for a few percent over level 9 on code and
    nothing on tensor data, so it is kept for bodies under 16 KiB only.
    """
    if size < (16 << 10):
        return 19
    if size < (1 << 20):
        return framing.ZSTD_LEVEL
    return 3


# A result is mostly tensor bytes, which zstd barely shrinks at any level (float32 activations:
# 7 % at level 1 and at level 3 alike); level 1 (0.02 ms for 24 KiB, against 0.04 ms at 3 and 2 ms
# at 19) keeps the server's encode off the round trip.
RESULT_ZSTD_LEVEL = 1
# Bytes that never leave this machine (vLLM's own RPC between its engine and the user's process):
# zstd's fastest level (float tensors barely compress; level 3 spends ~5 ms per 1.5 MB on ~7 %).
LOCAL_ZSTD_LEVEL = -1


def decode_request(data: bytes, *, limits: Optional[DecodeLimits] = None) -> Request:
    """Parse a binary request; IRVersionError for newer programs, IRDecodeError (IRLimitError for
    an oversized one) if malformed. Only plain data is built: the argument trees stay trees."""
    lim = limits_or_default(limits)
    header, offset = framing.read_header(data, REQUEST_MAGIC, "request", lim)
    check_version(header.get("ir_version"))
    body = framing.read_body(data, offset, "request", lim)
    if not isinstance(body, dict) or not isinstance(body.get("program"), dict):
        raise IRDecodeError("request body is not a map with a program")
    for key, kind in (("model", str), ("method", str)):
        if not isinstance(body.get(key), kind):
            raise IRDecodeError("request body: %r must be a string" % key)
    program = from_record(upgrade(dict(body["program"], header=header)))
    return Request(program, body["model"], body["method"], body.get("args", ["tuple"]),
                   body.get("kwargs", ["dict"]))


def encode_result(saved_tree: Any, level: int = RESULT_ZSTD_LEVEL) -> bytes:
    """The binary reply: the value tree of the saved variables (a dict tree); ``level``: zstd's
    (any level decodes the same way)."""
    problem = plain_problem(saved_tree, "saved")
    if problem:
        raise IRError("cannot encode result: %s" % problem)
    version = RESULT_VERSION if _has_records(saved_tree) else RESULT_VERSION_PLAIN
    raw = framing.pack({"version": version, "saved": saved_tree})
    return RESULT_MAGIC + framing.compress(raw, level)


def decode_result(data: bytes, *, limits: Optional[DecodeLimits] = None) -> Any:
    """The value tree of the saved variables from a binary reply (still a tree: decode it with
    :func:`~compiler.ir.values.decode_value` and the request's own references)."""
    framing.check_magic(data, RESULT_MAGIC, "result")
    body = framing.read_body(data, len(RESULT_MAGIC), "result", limits_or_default(limits))
    if not isinstance(body, dict) or "saved" not in body:
        raise IRDecodeError("result is not a map with saved values")
    version = body.get("version")
    if type(version) is not int or not RESULT_VERSION_PLAIN <= version <= RESULT_VERSION:
        raise IRDecodeError("result version %r is not supported (this nnsight reads versions %d to %d%s)" % (
            version, RESULT_VERSION_PLAIN, RESULT_VERSION,
            "; upgrade nnsight" if type(version) is int and version > RESULT_VERSION else ""))
    return body["saved"]


def saved_variables(saved: Any, names: Iterable[str]) -> Dict[str, Any]:
    """A decoded result as the variables to bind in the user's frame: a dict whose keys are names
    the trace's own program assigns. A reply is the server's word: any other key (``model``,
    ``__builtins__``, a name the body never set) would overwrite a variable of the caller."""
    if not isinstance(saved, dict):
        raise IRDecodeError("the server's reply is not a dict of saved variables")
    allowed = names if isinstance(names, (set, frozenset, dict)) else frozenset(names)
    for name in saved:
        if type(name) is not str or name not in allowed:
            raise IRDecodeError("the server's reply binds %r, which this trace never assigns: refused (a "
                                "result may only bind the names the trace body sets)" % (name,))
    return saved


def _has_records(tree: Any) -> bool:
    """Does a value tree hold a ``mapping`` node (iterative: any depth)?"""
    stack = [tree]
    while stack:
        t = stack.pop()
        if type(t) is list and t:
            if t[0] == "mapping":
                return True
            stack.extend(t)
    return False


def print_request(r: Request) -> str:
    """A readable text form of a request: the call, then the program's text form."""
    out: List[str] = [
        "request model %s method %s" % (quote(r.model), quote(r.method)),
        "request args %s" % format_literal(r.args),
        "request kwargs %s" % format_literal(r.kwargs),
        "",
    ]
    return "\n".join(out) + print_program(r.program)
