"""A GPT-2-small-shaped model for the benchmarks: 12 layers x 768, 12 heads, vocab 50257,
random weights (seeded), built offline.

It measures overhead at a realistic size: the forward of a 124M-parameter model costs tens of
milliseconds on one CPU thread, so a trace's fixed cost should vanish in it (target: <= 2 %).
The tokenizer is the tiny GPT-2's (`tiny_gpt2.gpt2_path()`): its ids are all below 50257,
and the vocabulary size only matters for the LM head's cost, which the config sets.

Built once under $NNSIGHT_BENCH_CACHE (default ~/.cache/nnsight-bench), atomically, so both
interpreters (ours, the peer) load the very same files. ~500 MB on disk.

CLI: `python benchmarks/gpt2_small.py` prints the path (building it if needed).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from tiny_gpt2 import CACHE, gpt2_path, save_complete  # noqa: E402

VERSION = "1"
SHAPE = dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=50257)


def gpt2_small_path() -> str:
    """Directory of the GPT-2-small-shaped model; $NNSIGHT_BENCH_GPT2_SMALL overrides."""
    env = os.environ.get("NNSIGHT_BENCH_GPT2_SMALL")
    if env:
        return env
    dest = CACHE / f"gpt2-small-shaped-v{VERSION}"
    if (dest / ".complete").exists():
        return str(dest)
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(gpt2_path())
    eos = tok.eos_token_id
    config = GPT2Config(**SHAPE, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    torch.manual_seed(0)
    save_complete(GPT2LMHeadModel(config).eval(), tok, dest)
    return str(dest)


if __name__ == "__main__":
    print(gpt2_small_path())
