"""Fixtures of tests/debugging (the helpers live in dbg_helpers.py)."""
import pytest

from dbg_helpers import runs, script_sections  # noqa: F401


@pytest.fixture(scope="session", autouse=True)
def _start_background_runs(request):
    """Start the shared subprocesses first, so the pseudo-terminal tests overlap with them."""
    if any("runs" in getattr(item, "fixturenames", ()) for item in request.session.items):
        request.getfixturevalue("runs")
