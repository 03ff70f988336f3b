"""Process-wide registries and their bounds: what a server running for months must watch.

Per-request state lives on the request and trace objects. What is left at module level is a
cache or an index, and each one is either bounded (a stated number of entries, oldest dropped
first) or weak (entries die with the objects they describe). Every such registry registers a
size function here, so a test and a server's metrics can read them all with :func:`sizes`.
"""
import linecache
import threading
from collections import OrderedDict
from typing import Callable, Dict, Optional, Tuple

_SIZES: Dict[str, Tuple[Callable[[], int], Optional[int]]] = {}


def track(name: str, size: Callable[[], int], bound: Optional[int]) -> None:
    """Report ``size()`` under ``name``; ``bound`` is its stated maximum (None: cleared per trace)."""
    _SIZES[name] = (size, bound)


def sizes() -> Dict[str, Tuple[int, Optional[int]]]:
    """``{name: (entries now, bound)}`` for every registry of the process."""
    return {name: (size(), bound) for name, (size, bound) in _SIZES.items()}


def over_bound() -> Dict[str, Tuple[int, int]]:
    """The registries holding more entries than their bound (empty when all is well)."""
    return {name: (n, bound) for name, (n, bound) in sizes().items() if bound is not None and n > bound}


# -- linecache entries for source that has no file ----------------------------------------------

LINECACHE_BOUND = 512
_lines: "OrderedDict[str, tuple]" = OrderedDict()  # file name -> the entry we put in linecache
_lines_lock = threading.Lock()


def remember_lines(filename: str, entry: tuple) -> None:
    """Put ``entry`` in ``linecache.cache[filename]`` (source with no file: exec'd code, programs
    from elsewhere), keeping at most LINECACHE_BOUND such entries: the oldest one we made is
    removed from linecache (unless someone replaced it since)."""
    with _lines_lock:
        linecache.cache[filename] = entry
        _lines[filename] = entry
        _lines.move_to_end(filename)
        while len(_lines) > LINECACHE_BOUND:
            old, old_entry = _lines.popitem(last=False)
            if linecache.cache.get(old) is old_entry:
                del linecache.cache[old]


def made_lines(filename: str) -> bool:
    """Is the linecache entry of ``filename`` one :func:`remember_lines` made?"""
    return filename in _lines and linecache.cache.get(filename) is _lines[filename]


track("linecache.no_file_sources", lambda: len(_lines), LINECACHE_BOUND)


def _track_compiler() -> None:
    """The frontend's caches (the torch-free compiler does not import the runtime)."""
    from compiler.frontend import cache, fastpath

    track("compiler.frontend.cache.programs", cache.size, cache.MAX_ENTRIES)
    track("compiler.frontend.fastpath.trees", fastpath.tree_cache_size, fastpath.TREES_BOUND)


_track_compiler()
