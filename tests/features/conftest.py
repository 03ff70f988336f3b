"""Feature tests share one dispatched GPT-2 and one Llama per test module (tiny, offline).

Module scope, not session scope: other feature tests check that no wrapper stays alive.
"""
import transformers  # noqa: F401  (import before nnsight mounts `.save`)
import pytest
import torch

from nnsight import LanguageModel

# The tiny models are far too small for intra-op parallelism: with several test processes on a
# small machine, torch's thread pool makes each forward ~20x slower than one thread does.
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def gpt2(gpt2_path):
    return LanguageModel(gpt2_path, dispatch=True)


@pytest.fixture(scope="module")
def llama(llama_path):
    return LanguageModel(llama_path, dispatch=True)


@pytest.fixture(params=["gpt2", "llama"])
def lm(request):
    """(kind, model) for both architectures."""
    return request.param, request.getfixturevalue(request.param)
