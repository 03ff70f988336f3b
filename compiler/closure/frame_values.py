"""The values a program's free names have in the caller's frame (locals first, then globals)."""
from typing import Any, Dict, Set, Tuple


def frame_values(program: Any, frame: Any) -> Tuple[Dict[str, Any], Set[str]]:
    """``(values, from_globals)``: each binding's value in ``frame``, and which came from its globals
    (module-level data, which the closure pass sends as a global of the frame's module)."""
    f_locals, f_globals = frame.f_locals, frame.f_globals
    values: Dict[str, Any] = {}
    from_globals: Set[str] = set()
    for b in program.bindings:
        if b.name in f_locals:
            values[b.name] = f_locals[b.name]
            if f_locals is f_globals:
                from_globals.add(b.name)
        elif b.name in f_globals:
            values[b.name] = f_globals[b.name]
            from_globals.add(b.name)
    return values, from_globals
