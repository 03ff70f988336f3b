"""Fixtures of the loader attack tests (a tiny GPT-2 per module; a no-trace check per test)."""
import pytest
import torch

from loader_attacks import LEGIT, PROMPT, Trace, payload, serve


@pytest.fixture(scope="module")  # not session: tests elsewhere check that no model outlives them
def gpt2(gpt2_path):
    from nnsight import LanguageModel

    return LanguageModel(gpt2_path)


@pytest.fixture(scope="module")
def expected_sum(gpt2):
    with gpt2.trace(PROMPT):
        out = gpt2.transformer.h[0].output[0].sum().save()
    return out


@pytest.fixture
def no_trace(gpt2, tmp_path, expected_sum):
    """Serve one legitimate request (warm-up), snapshot, run the test, check nothing changed and
    that a legitimate request right after still gives the right value."""
    serve(gpt2, payload(gpt2, LEGIT))
    trace = Trace(str(tmp_path))
    yield trace
    trace.check()
    result = serve(gpt2, payload(gpt2, LEGIT))
    assert torch.allclose(result["out"], expected_sum)


