"""The one accept path of a remote request: decode -> verify -> language gate -> load -> run -> encode.

Every place that runs request bytes goes through here: the in-process
simulation (``remote='local'``), the ``nnsight-server`` job runner and the vLLM
worker. The steps, all with the user's modules hidden
(:func:`runtime.loader.block_user_modules`), so a request fails exactly where a
real server would fail it:

* :func:`admit` -- decode the bytes, verify the program, refuse a program that
  needs a newer Python than this runtime. Nothing is loaded or run; a server
  calls it when a request arrives, to answer malformed input at once;
* :func:`accepted` -- admit, find the hosted model for the request's key, and
  build the program's :class:`runtime.loader.Loader` (its by-value modules
  installed for the ``with`` body);
* :func:`answer` -- the whole path: run the program with the tracer the
  request names and encode the saved values as result bytes.

A job's ``print()`` goes to the job's own ``log`` callback (the loader's
builtins are per request), never to a process-wide stream.
"""
import builtins
import contextlib
import hashlib
import io
from typing import Any, Callable, Dict, Iterator, Optional

from compiler.ir import FACT_LOCAL
from compiler.ir.request import Request, decode_request, encode_result
from compiler.ir.values import encode_value
from compiler.ir.verifier import verify
from compiler.lru import BoundedLRU

from . import claims, gate, integrity, registries
from .builder import CLAIMED
from .loader import LoadError, Loader, block_user_modules, tensor_side
from .local_blocks import LOCAL_BLOCKS, LocalBlockError, LocalBlocks, Transport

# (model, method, args, kwargs) -> the tracer that runs the request's program
MakeTracer = Callable[[Any, str, tuple, dict], Any]
# request.model key -> the hosted model (raise LoadError when it is not hosted)
FindModel = Callable[[str], Any]
# one line the job printed
LogLine = Callable[[str], None]


def admit(payload: bytes) -> Request:
    """Decode and check a request without loading or running anything.

    Raises :class:`compiler.ir.errors.IRError` (malformed, wrong IR version,
    invalid program) or :class:`runtime.gate.LanguageLevelError`.
    """
    small = len(payload) <= ADMITTED_MAX_BYTES
    key = hashlib.sha256(payload).digest() if small else b""
    if small:
        hit = _ADMITTED.get(key)
        if hit is not None:
            return hit
    request = decode_request(payload)
    verify(request.program)
    gate.check(request.program)  # language level: refused before anything is loaded or run
    if small:
        _ADMITTED.put(key, request)
    return request


# Requests admitted lately, by the SHA-256 of their bytes. A server admits each request twice (when
# it arrives, to answer malformed input at once, and when its job runs), and clients send the same
# bytes again and again (a call site in a loop). A decoded request is immutable and depends only on
# its bytes (and this runtime's Python, for the language gate), so the second admission is a lookup.
# Bounded in entries and by the size of each request (a big one, carrying tensors, is not kept).
ADMITTED_BOUND = 64
ADMITTED_MAX_BYTES = 256 << 10


_ADMITTED: "BoundedLRU[Request]" = BoundedLRU(ADMITTED_BOUND)
registries.track("runtime.accept.admitted", lambda: len(_ADMITTED), ADMITTED_BOUND)


class Accepted:
    """One admitted request with its model and loader (valid inside :func:`accepted`)."""

    def __init__(self, request: Request, model: Any, loader: Loader) -> None:
        self.request = request
        self.program = request.program
        self.model = model
        self.loader = loader

    def files(self) -> set:
        """The source files of the user's code in this program (for error frames)."""
        files = {u.loc.file for u in self.program.units}
        files |= {d.loc.file for d in getattr(self.program, "definitions", ())}
        return files


def printer(log: LogLine) -> Callable[..., None]:
    """A ``print`` that sends each printed line to ``log`` instead of a stream."""

    def job_print(*args: Any, sep: Optional[str] = " ", end: Optional[str] = "\n", file: Any = None,
                  flush: bool = False) -> None:
        if file is not None:  # print(..., file=f) to the user's own object still works
            builtins.print(*args, sep=sep, end=end, file=file, flush=flush)
            return
        buffer = io.StringIO()
        builtins.print(*args, sep=sep, end=end, file=buffer)
        text = buffer.getvalue()
        for line in text.splitlines() or [""]:
            log(line)

    job_print.__name__ = job_print.__qualname__ = "print"
    return job_print


@contextlib.contextmanager
def accepted(payload: bytes, find_model: FindModel, log: Optional[LogLine] = None) -> Iterator[Accepted]:
    """Admit ``payload``, find its model and load its program (user modules hidden meanwhile)."""
    with block_user_modules():
        request = admit(payload)
        model = find_model(request.model)
        if model is None:
            raise LoadError("model %r is not hosted by this server" % request.model)
        loader = Loader(request.program, model=model)
        if log is not None:
            loader.builtins["print"] = printer(log)
        with loader.installed():
            yield Accepted(request, model, loader)


def prepare_namespace(ns: Dict[str, Any]) -> Dict[str, Any]:
    """What every program namespace needs besides its bindings (builtins, the claim hook)."""
    ns.setdefault("__builtins__", builtins)
    ns.setdefault(CLAIMED, claims.claimed)
    return ns


def _no_client(block: int, message: bytes) -> bytes:
    raise LocalBlockError("this server cannot reach the client to run a `with tracer.local():` block")


def local_blocks(job: Accepted, transport: Optional[Transport]) -> LocalBlocks:
    """The job's ``tracer.local()`` exchange over ``transport``.

    Every request run gets one, so a ``tracer.local()`` its client did not mark (an older
    client) fails with a clear error instead of running its body on the server.
    """
    if transport is None and any(FACT_LOCAL in u.facts for u in job.program.units):
        raise LoadError("this program has `with tracer.local():` blocks, which need the client to follow the "
                        "job (a server with no way to reach the client cannot run them)")
    loader = job.loader
    return LocalBlocks(transport or _no_client, loader.decode, classref=loader.classref, objref=loader.objref)


def run(job: Accepted, make_tracer: MakeTracer, local: Optional[Transport] = None) -> Dict[str, Any]:
    """Run an accepted request with the tracer its call names; returns the saved variables.

    ``local`` carries the program's ``tracer.local()`` blocks to the client and back.
    """
    request, loader = job.request, job.loader
    with tensor_side.guarding(loader.guard.hosted):  # numpy & co. refused on hosted memory, however reached
        args = loader.decode(request.args)
        kwargs = loader.decode(request.kwargs)
        tracer = make_tracer(job.model, request.method, tuple(args), dict(kwargs))
        loader.tracer = tracer
        ns = loader.namespace()
        ns[LOCAL_BLOCKS] = local_blocks(job, local)
        return tracer.run_program(loader.compile(job.program), ns)


def encode_saved(job: Accepted, saved: Dict[str, Any]) -> bytes:
    """The result bytes of the saved variables (user classes as references the client resolves)."""
    return encode_result(saved_tree(job, saved))


def saved_tree(job: Accepted, saved: Dict[str, Any], objref: Optional[Callable[[Any], Any]] = None) -> Any:
    """The value tree of the saved variables. ``objref``, asked before the loader's, may write an
    object as a reference (a sandbox child's handles to objects of the model process)."""
    loader_ref = job.loader.objref
    hook = loader_ref if objref is None else (lambda obj: objref(obj) or loader_ref(obj))
    return encode_value(saved, where="the saved values", classref=job.loader.classref, objref=hook, records=True)


def answer(payload: bytes, find_model: FindModel, make_tracer: MakeTracer,
           log: Optional[LogLine] = None, local: Optional[Transport] = None) -> bytes:
    """Request bytes in, result bytes out: the whole accept path, with the model checked intact after
    the job (:mod:`runtime.integrity`; a server's job runner does the same around its own run)."""
    with accepted(payload, find_model, log) as job:
        before = integrity.snapshot(job.model, integrity.LOCAL_COPY_BYTES)
        try:
            result = encode_saved(job, run(job, make_tracer, local))
        except BaseException:
            integrity.enforce(before)
            raise
        integrity.enforce(before)
        return result
