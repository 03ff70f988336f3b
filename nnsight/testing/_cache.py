"""Build a directory once, atomically: readers see either nothing or a complete build."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

MARKER = ".complete"
STALE_TMP_SECONDS = 3600.0


def is_complete(directory: Path, stamp: str = "") -> bool:
    """Whether ``directory`` holds a finished build whose marker records ``stamp``."""
    try:
        return (directory / MARKER).read_text() == stamp
    except OSError:
        return False


def build_once(final: Path, build: Callable[[Path], None], stamp: str = "") -> str:
    """Return ``final``, first running ``build(tmp)`` and renaming ``tmp`` to it unless already complete.

    ``stamp`` is written to the marker file; a directory with another stamp is rebuilt. Concurrent
    callers may each build; the first rename wins and the others discard their copy.
    """
    if is_complete(final, stamp):
        return str(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        tmp.chmod(0o755)
        build(tmp)
        (tmp / MARKER).write_text(stamp)
        if is_complete(final, stamp):
            return str(final)  # a concurrent caller finished first
        if final.exists():
            shutil.rmtree(final)  # stale stamp or a build interrupted before this layout
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_complete(final, stamp):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(final)


def _remove_stale_tmp(final: Path) -> None:
    """Delete temporary directories left by killed builds of ``final``."""
    for tmp in final.parent.glob(f".{final.name}.tmp-*"):
        try:
            if time.time() - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass
