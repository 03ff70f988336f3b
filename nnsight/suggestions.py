"""Messages for names a user got slightly wrong: ``did you mean ...?`` instead of a module dump."""
import difflib
from typing import Any, Iterable, List


def closest(name: str, candidates: Iterable[str], limit: int = 3) -> List[str]:
    """The candidates most like ``name`` (case-insensitive), best first."""
    unique = sorted({c for c in candidates if isinstance(c, str) and not c.startswith("_")})
    lowered = {c.lower(): c for c in unique}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=limit, cutoff=0.6)
    return [lowered[h] for h in hits]


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` (or ``'x' or 'y'``), or an empty string when nothing is close."""
    hits = closest(name, candidates)
    if not hits:
        return ""
    return " Did you mean " + " or ".join(repr(h) for h in hits) + "?"


def misspelled_attribute(envoy: Any, module: Any, name: str) -> str:
    """Why ``envoy.<name>`` failed, naming the module by class and path (not its whole tree)."""
    children = list(envoy.__dict__.get("_children") or ())
    aliases = list(envoy.__dict__.get("_aliases") or ())
    candidates = children + aliases + dir(module) + [n for n in dir(type(envoy))]
    hint = did_you_mean(name, candidates)
    if not hint and children:
        shown = ", ".join(children[:8]) + (", ..." if len(children) > 8 else "")
        hint = f" Its submodules: {shown}. `print(model)` shows the module tree."
    path = envoy.__dict__.get("path", "")
    where = f" at `{path}`" if path else ""
    return f"{type(module).__name__}{where} has no attribute {name!r}.{hint}"
