"""Tiny real BERT models (masked LM, sequence classification) built offline, cached, loaded by path.

    path = build_bert()                    # BertForMaskedLM: the "fill-mask" task
    path = build_bert_classifier()         # BertForSequenceClassification: "text-classification"
    model = AutoModelForMaskedLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)

Like :mod:`nnsight.testing.tiny_models`: a WordPiece tokenizer trained on the same built-in corpus
(``[CLS] ... [SEP]``, with ``[MASK]`` and ``[PAD]``), deterministic random weights
(``torch.manual_seed(0)``), one directory per builder configuration under the same cache.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._cache import build_once
from .tiny_models import _model_dir, cache_root, corpus

RECIPE = 1  # bump when the tokenizer recipe or the saved layout changes
VOCAB_SIZE = 512
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

BERT_CONFIG = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                   max_position_embeddings=128)
LABELS = {0: "NEGATIVE", 1: "POSITIVE"}


def train_wordpiece(directory: str | os.PathLike, *, vocab_size: int = VOCAB_SIZE):
    """Train a lower-casing WordPiece tokenizer on the corpus, save it to ``directory``, return it."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(corpus(), trainer=trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=BERT_CONFIG["max_position_embeddings"],
        clean_up_tokenization_spaces=False)
    wrapped.save_pretrained(str(directory))
    return wrapped


def _build_bert(name: str, model_cls: str, extra: dict, cache_dir) -> str:
    params = {"arch": name, "recipe_encoders": RECIPE, "vocab": VOCAB_SIZE, **BERT_CONFIG, **extra}

    def build(directory: Path) -> None:
        import torch
        import transformers

        tok = train_wordpiece(directory)
        torch.manual_seed(0)
        cfg = transformers.BertConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, **BERT_CONFIG, **extra)
        cfg.architectures = [model_cls]
        getattr(transformers, model_cls)(cfg).eval().save_pretrained(str(directory))

    return build_once(_model_dir(cache_root(cache_dir), name, params), build)


def build_bert(cache_dir: str | os.PathLike | None = None) -> str:
    """Build (once) a tiny ``BertForMaskedLM``; return its directory."""
    return _build_bert("bert", "BertForMaskedLM", {}, cache_dir)


def build_bert_classifier(cache_dir: str | os.PathLike | None = None) -> str:
    """Build (once) a tiny two-label ``BertForSequenceClassification``; return its directory."""
    extra = {"id2label": dict(LABELS), "label2id": {v: k for k, v in LABELS.items()}}
    return _build_bert("bert-cls", "BertForSequenceClassification", extra, cache_dir)


BUILDERS = {"bert": build_bert, "bert-cls": build_bert_classifier}

if __name__ == "__main__":
    for _name, _build in BUILDERS.items():
        print(f"{_name}: {_build()}")
