"""The remote end-to-end suites of tests/server, run in the untrusted tier.

Every test of those modules runs here against a server whose jobs all run in
the sandbox (``--sandbox always``); the documented refusals (docs/security.md, "What the
untrusted tier refuses") must fail with the refusal made before the job runs.
"""
import functools

import pytest

import test_concurrency
import test_latency_paths
import test_model_output_records
import test_protocol
import test_remote_scan
import test_remote_trace
import test_section8_examples
import test_server_local_blocks
from test_protocol import payload  # noqa: F401  (the protocol suite's fixture)

SUITES = (test_remote_trace, test_section8_examples, test_server_local_blocks, test_remote_scan, test_protocol,
          test_concurrency, test_latency_paths, test_model_output_records)
# Refused before the job runs (their IR has a gradient session): each must fail with that refusal.
REFUSED = {
    "test_gradients_match_local": "gradients cannot flow into the hosted weights' process",
    "test_gradients_remotely": "gradients cannot flow into the hosted weights' process",
}
EARLY_REFUSAL = ("gradients cannot flow through the hosted model in the untrusted tier",
                 "the job was refused before it ran")


def _copy(test):
    """A new function object for ``test``: marks added here must not reach tests/server's own test."""

    @functools.wraps(test)
    def copy(*args, **kwargs):
        return test(*args, **kwargs)

    return copy


def _refused(test):
    """``test`` must fail with the untrusted tier's refusal before the job runs (not pass, not fail otherwise)."""

    @functools.wraps(test)
    def refused(*args, **kwargs):
        with pytest.raises(Exception) as info:
            test(*args, **kwargs)
        assert all(part in str(info.value) for part in EARLY_REFUSAL), info.value

    return refused


for _suite in SUITES:
    for _name in dir(_suite):
        if _name.startswith("test_"):
            _test = _copy(getattr(_suite, _name))
            if _name in REFUSED:
                _test = _refused(_test)
            globals()["%s__%s" % (_suite.__name__, _name)] = _test
