"""Debug-mode report of fast paths that fell back to their slow path.

:mod:`compiler.fallbacks` counts every fallback; with ``CONFIG.APP.DEBUG`` on (or
``NNSIGHT_DEBUG=1``, or ``python -d``) each one is also logged, with its reason, to the
``nnsight.fastpaths`` logger (stderr when logging is not configured), so a trace that keeps
taking the slow path shows why. ``fallback_counts()`` returns the totals.
"""
import logging

from compiler.fallbacks import FALLBACKS, NAMES

from .config import CONFIG

LOG = logging.getLogger("nnsight.fastpaths")


def _report(name: str, reason: str) -> None:
    if CONFIG.APP.DEBUG:
        LOG.warning("nnsight: fast path %r fell back (%s): %s", name, NAMES[name], reason)


def fallback_counts() -> dict:
    """How often each fast path fell back to its slow path in this process (zeros included)."""
    return FALLBACKS.counts()


def install() -> None:
    FALLBACKS.listener = _report
