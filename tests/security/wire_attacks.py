"""Building hostile wire payloads by hand, as an attacker would, and checking they leave no trace.

Nothing here uses the client: requests are written as IR text or packed field
by field, results are msgpack + zstd made directly. :func:`no_trace` wraps one
attack: it must end in the expected error and leave no file, no process, no new
module and no memory high-water mark behind.
"""
import contextlib
import os
import resource
import sys
import tracemalloc

import msgpack
import numpy  # noqa: F401  (a server has torch and numpy loaded: resolving them is not a trace)
import psutil
import torch  # noqa: F401
import zstandard

from compiler.ir import framing, parse_program, verify
from compiler.ir.request import REQUEST_MAGIC, RESULT_MAGIC, Request, decode_request, decode_result, encode_request
from compiler.ir.values import decode_value
from runtime.loader import Loader

MEMORY_BOUND = 64 << 20  # bytes: what one hostile payload may make the decoder allocate
_PROCESS_EVENTS = ("os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                   "ctypes.dlopen", "socket.connect")


class _AuditLog:
    """Audit events (files opened, processes started...) seen while an attack is decoded.

    Python cannot remove an audit hook, so one hook is installed once and records only
    while a :func:`no_trace` block is active.
    """

    def __init__(self):
        self.events = None
        sys.addaudithook(self.hook)

    def hook(self, event, args):
        if self.events is not None and (event == "open" or event.startswith(_PROCESS_EVENTS)):
            self.events.append((event, args[0] if args else None))


_AUDIT = _AuditLog()


def shell(marker):
    """A shell command that would prove code ran: it creates ``marker``."""
    return "touch %s" % marker


@contextlib.contextmanager
def no_trace(tmp_path, bound=MEMORY_BOUND):
    """Assert the body left no trace: marker file, child process, new module, memory over ``bound``."""
    marker = tmp_path / "pwned"
    modules = set(sys.modules)
    children = {p.pid for p in psutil.Process().children(recursive=True)}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    _AUDIT.events = events = []
    try:
        yield marker
    finally:
        _AUDIT.events = None
        _, peak = tracemalloc.get_traced_memory()
        if not tracing:
            tracemalloc.stop()
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss
        assert not marker.exists(), "the payload ran code: %s exists" % marker
        assert not list(tmp_path.glob("pwned*")), "the payload wrote a file"
        outside = [(e, a) for e, a in events if e != "open" or not str(a).startswith(str(tmp_path))]
        assert not outside, "decoding opened files or started processes: %s" % outside[:5]
        new = set(sys.modules) - modules
        assert not new, "decoding imported modules: %s" % sorted(new)
        started = {p.pid for p in psutil.Process().children(recursive=True)} - children
        assert not started, "decoding started processes: %s" % started
        assert peak < bound, "decoding allocated %d bytes (bound %d)" % (peak, bound)
        assert grew < bound, "the process grew by %d bytes (bound %d)" % (grew, bound)


# -- requests ---------------------------------------------------------------------------------------


def program_text(bindings=None, source="out = v\n"):
    """The IR text of a one-unit program, written by hand (bindings: name -> IR literal text)."""
    lines = ["nnsight-ir 1", 'producer ""', 'python ""', "min-python 3.9", "dynamic true", ""]
    for name, literal in (bindings or {}).items():
        lines.append("binding %s value %s" % (name, literal))
    lines += ["", 'unit 0 trace at "attack.py":1:0 parent=none header=0:0 assigned=[]']
    lines += ["  | " + line for line in source.splitlines()]
    return "\n".join(lines) + "\n"


def literal(tree):
    """The IR text literal of a plain-data tree (via the printer's own format)."""
    from compiler.ir.printer import format_literal

    return format_literal(tree)


def request_with(value=None, args=None, kwargs=None):
    """Request bytes whose binding ``v`` (and optionally args/kwargs) hold hostile value trees."""
    program = parse_program(program_text({"v": literal(value if value is not None else None)}))
    return encode_request(Request(program, "model", "trace", args if args is not None else ["tuple"],
                                  kwargs if kwargs is not None else ["dict"]))


def raw_request(header, body, level=3):
    """A request frame packed field by field: any header, any body object."""
    raw = msgpack.packb(body, use_bin_type=True)
    return framing.wrap(REQUEST_MAGIC, header, zstandard.ZstdCompressor(level=level).compress(raw))


def server_decode(payload):
    """What the server does with request bytes before running anything: decode, verify, load values."""
    request = decode_request(payload)
    verify(request.program)
    loader = Loader(request.program)
    with loader.installed():
        loader.decode(request.args)
        loader.decode(request.kwargs)
        return loader.namespace()


# -- results ----------------------------------------------------------------------------------------


def result_bytes(saved_tree, version=1):
    """Reply bytes a hostile server could send."""
    raw = msgpack.packb({"version": version, "saved": saved_tree}, use_bin_type=True)
    return RESULT_MAGIC + zstandard.ZstdCompressor(level=3).compress(raw)


def client_decode(reply, closure):
    """What the client does with reply bytes (nnsight.tracing.remote.run_remote)."""
    return decode_value(decode_result(reply), resolve=closure.resolve, may_build=closure.may_build)


def bomb_frame(size, declare=False):
    """A hand-made zstd frame of RLE blocks (4 bytes per 128 KiB) that inflates to ``size`` zero bytes:
    about 100 kB for 3 GB. ``declare``: the frame header states the content size."""
    block = 1 << 17
    header = b"\x28\xb5\x2f\xfd"  # zstd magic
    if declare:
        header += bytes([0xC0, 7 << 3]) + size.to_bytes(8, "little")  # 8-byte content size, 128 KiB window
    else:
        header += bytes([0x00, 7 << 3])
    blocks = []
    left = size
    while left:
        n = min(left, block)
        left -= n
        head = (1 if not left else 0) | (1 << 1) | (n << 3)  # last flag, type RLE, size
        blocks.append(head.to_bytes(3, "little") + b"\0")
    return header + b"".join(blocks)


def in_tmp_path(tmp_path):
    """Run with ``tmp_path`` as the working directory (a relative write would land there)."""
    return _chdir(tmp_path)


@contextlib.contextmanager
def _chdir(path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)
