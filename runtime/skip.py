"""Skip the body of a top-level ``with`` block: the compiled program runs instead.

The body of a ``with`` statement can't be skipped by its context manager, so
on ``__enter__`` we install a local trace function on the caller's frame that
raises :class:`SkipBody` at the body's first line; ``__exit__`` catches it.
The trap removes itself before raising, so the with-statement's own cleanup
(which runs on the header's line) is not trapped again.

Two bodies need more care. One that starts with ``try:``: from 3.11 on that
line is a NOP outside the with-statement's exception range, and every later
line is inside the ``try``, whose ``finally`` would run on the way out. And a
multi-line header whose ``as`` target is stored on a later line: that line's
event comes before the store. So the trap raises at the instruction right after
``__enter__`` returns instead (an ``opcode`` trace event: the first instruction
inside the with's exception range), binding the ``as`` target itself when that
instruction stores it. Before 3.12 it always does; from 3.12 on, where turning
on opcode events makes every traced frame of the process slower (pdb,
coverage), only for bodies that start with a NOP line, and otherwise binds a
target stored on the line it stops at. Unusual ``as`` targets (attributes,
tuples) fall back to the first line event that is not a NOP.
"""
import dis
import sys

from compiler.fallbacks import FALLBACKS

from . import registries

_NOP = dis.opmap["NOP"]
_ALWAYS_OPCODES = sys.version_info < (3, 12)


class SkipBody(BaseException):
    """Raised at the first line of a traced with-body to skip it (internal).

    A BaseException, so that a body starting inside ``try: ... except Exception:``
    does not catch it.
    """


# id(code) -> (code, instructions, {offset: position}): bytecode analysis once per code object
# (keyed by id: hashing a code object is expensive and uncached).
_INDEX: dict = {}


def _index(code):
    entry = _INDEX.get(id(code))
    if entry is None or entry[0] is not code:
        if len(_INDEX) > 4096:
            _INDEX.clear()
        instructions = list(dis.get_instructions(code))
        entry = (code, instructions, {ins.offset: i for i, ins in enumerate(instructions)})
        _INDEX[id(code)] = entry
    return entry[1], entry[2]


def _noop(frame, event, arg):
    return None


class Trap:
    """A one-shot trace function that skips one frame's with-body."""

    __slots__ = ("frame", "previous", "sprung", "target")

    def __init__(self, frame, target=None) -> None:
        self.frame = frame
        self.previous = sys.gettrace()
        self.sprung = False
        self.target = target  # () -> the value `with ... as x` binds
        if _ALWAYS_OPCODES or _body_starts_with_nop(frame):
            # Stop at the instruction right after __enter__ returns. (Set before settrace:
            # from 3.12 on, settrace decides there whether to deliver opcode events.)
            frame.f_trace_opcodes = True
        sys.settrace(_noop)
        frame.f_trace_lines = True
        frame.f_trace = self

    def __call__(self, frame, event, arg):
        if frame is not self.frame:
            return None
        if event == "opcode":
            frame.f_trace_opcodes = False
            if not _bind_target(frame, self.target):
                FALLBACKS.note("skip.opcode_target", f"{frame.f_code.co_filename}:{frame.f_lineno}")
                return self  # an unusual `as` target: fall back to the line event below
        elif event == "line":
            if frame.f_trace_opcodes:
                return self  # the opcode event of this same instruction comes next
            if frame.f_code.co_code[frame.f_lasti] == _NOP:
                # e.g. a body that starts with `try:`: 3.11+ puts that line's NOP outside the
                # with-statement's exception range; wait for the next line (inside the try).
                return self
            if _stores_target(frame):  # `) as tracer:` on a line of its own
                _bind_target(frame, self.target)
        self.release()
        self.sprung = True
        raise SkipBody()

    def release(self) -> None:
        if self.frame is not None:
            self.frame.f_trace_opcodes = False
            self.frame.f_trace = None
            sys.settrace(self.previous)
            self.frame = None
        self.target = None  # a bound method of the tracer that holds this trap: no cycle


def arm(frame, target=None) -> Trap:
    """Skip ``frame``'s with-body; :func:`disarm` (or the trap itself) undoes it.

    ``target()`` is what ``__enter__`` returns (bound by the trap when it has to
    stop before the ``as`` target is stored).
    """
    return Trap(frame, target)


_TARGET_OPS = ("STORE_", "UNPACK_", "LOAD_", "POP_TOP", "COPY", "SWAP", "CACHE", "EXTENDED_ARG")


def _body_starts_with_nop(frame) -> bool:
    """Does the with-body being entered start with a NOP line (``try:``)?

    Looks past the instructions that store the ``as`` target. (A false positive
    only costs the opcode trap where the line trap would have done.)
    """
    instructions, _ = _index(frame.f_code)
    for ins in instructions:
        if ins.offset <= frame.f_lasti:
            continue
        if ins.opcode == _NOP and ins.starts_line:
            return True
        if not ins.opname.startswith(_TARGET_OPS):
            return False
    return False


def _stores_target(frame) -> bool:
    """Is the current instruction the one right after the with-statement's enter?"""
    instructions, at = _index(frame.f_code)
    i = at.get(frame.f_lasti)
    return bool(i) and instructions[i - 1].opname in ("BEFORE_WITH", "SETUP_WITH")


_STORES = {"STORE_NAME", "STORE_GLOBAL", "STORE_FAST", "STORE_DEREF"}


def _bind_target(frame, target) -> bool:
    """At the instruction after ``__enter__``: do its store of the ``as`` target, if any.

    Returns False when that instruction is something else than POP_TOP or a
    plain name store (the caller then keeps the line-based trap).
    """
    found = store_at(frame.f_code, frame.f_lasti)
    if found is None:
        instructions, at = _index(frame.f_code)
        i = at.get(frame.f_lasti)
        if i is None:
            return False
        ins = instructions[i]
        found = (ins.opname, ins.argval)
    opname, name = found
    if opname == "POP_TOP":
        return True
    if opname.startswith("STORE_FAST_") and isinstance(name, tuple):  # 3.13 superinstructions
        opname, name = "STORE_FAST", name[0]
    if opname not in _STORES or target is None:
        return False
    value = target()
    if opname == "STORE_GLOBAL":
        frame.f_globals[name] = value
    elif opname == "STORE_NAME":
        frame.f_locals[name] = value
        if frame.f_locals is not frame.f_globals:
            _locals_to_fast(frame)
    else:
        frame.f_locals[name] = value
        _locals_to_fast(frame)
    return True


_EXTENDED_ARG = dis.opmap["EXTENDED_ARG"]
_OPNAME = dis.opname


def store_at(code, offset: int):
    """``(opname, name)`` of a POP_TOP or plain name store at ``offset``, read from the raw bytecode.

    The common targets of ``with ... as x`` without disassembling the whole
    function (``dis`` costs ~1 ms for a long one, on every new call site).
    None for anything else (the caller then asks ``dis``).
    """
    co = code.co_code
    if not 0 <= offset < len(co) - 1:
        return None
    opname = _OPNAME[co[offset]]
    if opname == "POP_TOP":
        return opname, None
    if opname not in ("STORE_NAME", "STORE_GLOBAL", "STORE_FAST"):
        return None
    arg, shift, i = co[offset + 1], 8, offset - 2
    while i >= 0 and co[i] == _EXTENDED_ARG:
        arg |= co[i + 1] << shift
        shift += 8
        i -= 2
    names = code.co_varnames if opname == "STORE_FAST" else code.co_names
    return (opname, names[arg]) if arg < len(names) else None


from .frames import locals_to_fast as _locals_to_fast  # noqa: E402


def disarm(frame, trap: Trap) -> None:
    trap.release()


registries.track("runtime.skip.indexed_codes", lambda: len(_INDEX), 4097)
