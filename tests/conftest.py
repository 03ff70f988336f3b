"""Shared fixtures: small real models built offline, once per session."""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def gpt2_path():
    from nnsight.testing.tiny_models import build_gpt2

    return build_gpt2()


@pytest.fixture(scope="session")
def llama_path():
    from nnsight.testing.tiny_models import build_llama

    return build_llama()


@pytest.fixture(scope="session")
def sd_path():
    from nnsight.testing.tiny_diffusion import build_stable_diffusion

    return build_stable_diffusion()
