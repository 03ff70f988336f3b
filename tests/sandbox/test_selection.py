"""Which jobs run in the sandbox: the ``--sandbox`` mode and the key's tier."""
import pytest

from runtime.sandbox.selection import uses_sandbox


@pytest.mark.parametrize("mode, tier, sandboxed", [
    ("always", "trusted", True), ("always", None, True), ("always", "untrusted", True),
    ("never", "untrusted", False), ("never", None, False),
    ("per-key", "untrusted", True), ("per-key", "trusted", False), ("per-key", "someday-new", True),
    ("per-key", None, False),  # no tier known (no key): runs in the model's process
])
def test_uses_sandbox(mode, tier, sandboxed):
    assert uses_sandbox(mode, tier) is sandboxed
