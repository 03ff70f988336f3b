"""Tiny real transformers models (GPT-2, Llama) built offline, cached on disk, loaded by path.

    path = build_gpt2()                                   # or build_llama()
    model = AutoModelForCausalLM.from_pretrained(path)    # exactly like a hub name
    tokenizer = AutoTokenizer.from_pretrained(path)

Each model gets a small byte-level BPE tokenizer trained here on a built-in English corpus and
deterministic random weights (``torch.manual_seed(0)``). A model lives in
``<cache>/<name>-<hash>``: the hash covers the builder's parameters and the transformers major
version, so a change rebuilds. The cache is ``cache_dir``, else ``$NNSIGHT_TEST_MODELS``, else
``~/.cache/nnsight-dev/models``. Builds go to a temporary directory renamed into place, so
parallel workers and interrupted runs never see a half-built model.

    python -m nnsight.testing.tiny_models [--cache-dir DIR]     # builds if needed, prints paths
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
from pathlib import Path

from ._cache import build_once

# Bump when the corpus, the tokenizer recipe or the saved layout changes: every model rebuilds.
RECIPE_VERSION = 2
ENV_VAR = "NNSIGHT_TEST_MODELS"
DEFAULT_CACHE = Path.home() / ".cache" / "nnsight-dev" / "models"

EOS = "<|endoftext|>"
VOCAB_SIZE = 768
MAX_POSITIONS = 256

GPT2_CONFIG = dict(n_layer=4, n_embd=64, n_head=2, n_inner=256, n_positions=MAX_POSITIONS)
LLAMA_CONFIG = dict(
    num_hidden_layers=2,
    hidden_size=64,
    num_attention_heads=2,
    num_key_value_heads=1,
    intermediate_size=128,
    max_position_embeddings=MAX_POSITIONS,
    tie_word_embeddings=False,
)


# --------------------------------------------------------------------------- corpus + tokenizer

_CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Japan", "Tokyo"), ("England", "London"), ("Canada", "Ottawa"), ("Egypt", "Cairo"),
    ("Russia", "Moscow"), ("China", "Beijing"), ("Greece", "Athens"), ("Peru", "Lima"),
]
_LANDMARKS = [
    ("The Eiffel Tower", "Paris"), ("The Colosseum", "Rome"), ("Big Ben", "London"),
    ("The Brandenburg Gate", "Berlin"), ("The Space Needle", "Seattle"),
    ("The Statue of Liberty", "New York"), ("The Golden Gate Bridge", "San Francisco"),
]
_NAMES = ["Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Mary", "John"]
_SPORTS = ["tennis", "soccer", "basketball", "baseball", "golf", "hockey", "chess", "football"]
_OBJECTS = ["a book", "the ball", "a key", "an apple", "the drink", "a letter", "the map"]
_NUMBER_WORDS = "zero one two three four five six seven eight nine ten eleven twelve".split()


def corpus() -> list[str]:
    """A few hundred short English sentences, generated deterministically."""
    lines = ["Hello world", "Hello world!", "hello, World.", "Hello, my name is"]
    for country, city in _CAPITALS:
        lines += [
            f"The capital of {country} is {city}.",
            f"{city} is the capital of {country}.",
            f"I live in {city}, a big city in {country}.",
        ]
    for place, city in _LANDMARKS:
        lines += [f"{place} is in {city}.", f"{place} is located in the city of {city}."]
    for i, name in enumerate(_NAMES):
        sport = _SPORTS[i % len(_SPORTS)]
        other = _NAMES[(i + 3) % len(_NAMES)]
        thing = _OBJECTS[i % len(_OBJECTS)]
        lines += [
            f"{name} plays {sport} every weekend.",
            f"{name} and {other} went to the store.",
            f"When {name} and {other} went to the park, {other} gave {thing} to {name}.",
            f"My name is {name} and I like {sport}.",
            f"{name} is {20 + 3 * i} years old.",
            f"{name} lives in {_CAPITALS[i][1]} and speaks with {other} every day.",
            f"Then, {name} and {other} had a long day at the office.",
        ]
        lines += [f"{name} likes {s} more than {t}." for s, t in zip(_SPORTS, _SPORTS[i % 7 + 1:])]
    for sport in _SPORTS:
        lines += [f"The best {sport} player in the world won the game.", f"I watched {sport} on TV."]
    for i, word in enumerate(_NUMBER_WORDS):
        lines += [f"{word} is {i}", f"{i} + {i} = {2 * i}", f"The year was {1990 + 2 * i}."]
    lines += [" ".join(_NUMBER_WORDS), " ".join(str(i) for i in range(100)), "1, 2, 3, 4, 5"]
    lines += [
        "The quick brown fox jumps over the lazy dog.",
        "Once upon a time, there was a little girl who lived in a village.",
        "The cat sat on the mat. The dog sat on the log.",
        "Madison Square Garden is located in New York.",
        "What is the meaning of life?",
        "It was a dark and stormy night; the rain fell in torrents.",
        "Question: What color is the sky? Answer: The sky is blue.",
        "\tIndented text\nwith a newline and trailing spaces  ",
    ]
    return lines


def train_tokenizer(directory: str | os.PathLike, *, vocab_size: int = VOCAB_SIZE, add_bos: bool = False,
                    model_max_length: int = MAX_POSITIONS):
    """Train a byte-level BPE tokenizer on :func:`corpus`, save it to ``directory``, return it.

    ``<|endoftext|>`` (id 0) is the bos, eos and pad token, as for GPT-2 in nnsight. Byte-level
    means every string round-trips: ``decode(encode(s)) == s``. With ``add_bos`` the bos token is
    prepended to every encoded sequence (Llama style); decode with ``skip_special_tokens=True``
    then round-trips.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{EOS} $A", pair=f"{EOS} $A {EOS} $B", special_tokens=[(EOS, tok.token_to_id(EOS))]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        pad_token=EOS,
        unk_token=None,
        model_max_length=model_max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    wrapped.save_pretrained(str(directory))
    return wrapped


# --------------------------------------------------------------------------- cache


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The directory holding built models: ``cache_dir``, ``$NNSIGHT_TEST_MODELS`` or the default."""
    return Path(cache_dir or os.environ.get(ENV_VAR) or DEFAULT_CACHE).expanduser()


def _model_dir(root: Path, name: str, params: dict) -> Path:
    major = importlib.metadata.version("transformers").split(".")[0]  # no import: cache hits stay fast
    key = json.dumps({"recipe": RECIPE_VERSION, "transformers": major, **params}, sort_keys=True)
    return root / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _build(arch: str, config_cls: str, model_cls: str, config: dict, add_bos: bool, cache_dir) -> str:
    params = {"arch": arch, "vocab": VOCAB_SIZE, "add_bos": add_bos, **config}

    def build(directory: Path) -> None:
        import torch
        import transformers

        tok = train_tokenizer(directory, add_bos=add_bos)
        ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        torch.manual_seed(0)
        cfg = getattr(transformers, config_cls)(vocab_size=len(tok), **config, **ids)
        model = getattr(transformers, model_cls)(cfg).eval()
        model.generation_config = transformers.GenerationConfig(**ids)
        model.save_pretrained(str(directory))  # safetensors

    return build_once(_model_dir(cache_root(cache_dir), arch, params), build)


# --------------------------------------------------------------------------- builders


def build_gpt2(cache_dir: str | os.PathLike | None = None) -> str:
    """Build (once) a tiny ``GPT2LMHeadModel``; return its directory."""
    return _build("gpt2", "GPT2Config", "GPT2LMHeadModel", GPT2_CONFIG, add_bos=False, cache_dir=cache_dir)


def build_llama(cache_dir: str | os.PathLike | None = None) -> str:
    """Build (once) a tiny ``LlamaForCausalLM`` (grouped-query attention, bos prepended); return its directory."""
    return _build("llama", "LlamaConfig", "LlamaForCausalLM", LLAMA_CONFIG, add_bos=True, cache_dir=cache_dir)


BUILDERS = {"gpt2": build_gpt2, "llama": build_llama}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nnsight.testing.tiny_models", description=__doc__.split("\n")[0])
    parser.add_argument("--cache-dir", help=f"default: ${ENV_VAR} or {DEFAULT_CACHE}")
    args = parser.parse_args(argv)
    for name, build in BUILDERS.items():
        print(f"{name}: {build(args.cache_dir)}")


if __name__ == "__main__":
    main()
