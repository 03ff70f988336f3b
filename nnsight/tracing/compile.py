"""From a user's ``with`` statement to a built program, once per call site."""
import linecache
from typing import Dict, Tuple

from compiler.frontend import source_for_frame
from compiler.frontend.fastpath import lower_with_accesses
from runtime import claims, registries
from runtime.builder import CompiledProgram

from .irdump import dump_program

# (id(code), lasti) -> (code, program); at most CACHE_BOUND call sites, the oldest dropped first
# (a server or notebook makes new code objects all the time). A plain dict: a hit costs one lookup.
_cache: Dict[Tuple[int, int], Tuple[object, CompiledProgram]] = {}
CACHE_BOUND = 1024


def compile_call_site(frame) -> CompiledProgram:
    """The compiled program for the with-statement ``frame`` is entering.

    The frontend runs once per call site (code object + instruction offset);
    a trace in a loop is lowered once.
    """
    code = frame.f_code
    key = (id(code), frame.f_lasti)  # by id: hashing a code object is expensive and uncached
    entry = _cache.get(key)
    compiled = entry[1] if entry is not None and entry[0] is code else None
    if compiled is None:
        source = source_for_frame(frame)
        if source.filename.startswith("<") and source.filename not in linecache.cache:
            lines = source.text.splitlines(True)
            pad = [""] * (source.first_line - 1)
            registries.remember_lines(source.filename, (len(source.text), None, pad + lines, source.filename))
        program, _ = lower_with_accesses(source.text, source.filename, frame.f_lineno,
                                                first_line=source.first_line, lines=source.lines)
        compiled = CompiledProgram(program)
        dump_program(program)
        _name_units(compiled, frame.f_code)
        while len(_cache) >= CACHE_BOUND:
            del _cache[next(iter(_cache))]
        _cache[key] = (code, compiled)
    return compiled


def _name_units(compiled: CompiledProgram, code) -> None:
    """Frames of the units read ``in <function>`` like the user's code (not ``in <module>``)."""
    if code.co_name == "<module>":
        return
    names = {"co_name": code.co_name}
    if hasattr(code, "co_qualname"):
        names["co_qualname"] = code.co_qualname
    for unit in compiled.units:
        unit.code = unit.code.replace(**names)
        claims.register(unit.code, unit)


def clear_cache() -> None:
    _cache.clear()


registries.track("nnsight.tracing.compile.call_sites", lambda: len(_cache), CACHE_BOUND)
