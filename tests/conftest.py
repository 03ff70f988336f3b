"""Shared fixtures: small real models built offline, once per session."""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# MKL's GEMM picks its blocking from memory alignment and from other threads' load, so two runs of
# one trace can differ in the last bit (about 1e-7) unless reproducibility mode is on. The tests
# compare a server subprocess's values with the test process's bit for bit; this setting (read
# when torch loads MKL, and inherited by the servers the tests start) makes that comparison fair.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")


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
