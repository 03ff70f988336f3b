"""A tiny real encoder-decoder model (BART) built offline, cached on disk, loaded by path.

    path = build_bart()
    model = AutoModelForSeq2SeqLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)

Same recipe as :mod:`nnsight.testing.tiny_models` (its byte-level tokenizer, deterministic
weights, the same cache and atomic builds): a model whose forward takes more than the prompt
(``decoder_input_ids``), for checking that keyword arguments reach the model.
"""
from __future__ import annotations

import os

from .tiny_models import MAX_POSITIONS, _build

BART_CONFIG = dict(
    d_model=64,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=128,
    decoder_ffn_dim=128,
    max_position_embeddings=MAX_POSITIONS,
    decoder_start_token_id=0,
)


def build_bart(cache_dir: str | os.PathLike | None = None) -> str:
    """Build (once) a tiny ``BartForConditionalGeneration``; return its directory."""
    return _build("bart", "BartConfig", "BartForConditionalGeneration", BART_CONFIG, add_bos=False,
                  cache_dir=cache_dir)
