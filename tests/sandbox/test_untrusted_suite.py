"""The remote end-to-end suite (tests/server/test_remote_trace.py), run in the untrusted tier.

Every test of that module runs here against a server whose jobs all run in the
sandbox (``--sandbox always``), minus the documented refusals (docs/security.md).
"""
import pytest

import test_remote_trace as suite

# Refused in the untrusted tier (docs/security.md, "What the untrusted tier refuses").
REFUSED = {"test_gradients_match_local": "gradients cannot flow into the hosted weights' process"}

for _name in dir(suite):
    if _name.startswith("test_"):
        _test = getattr(suite, _name)
        if _name in REFUSED:
            _test = pytest.mark.skip(reason="refused in the untrusted tier: " + REFUSED[_name])(_test)
        globals()[_name] = _test
