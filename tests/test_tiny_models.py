"""The tiny offline GPT-2 / Llama builders: load by path, tokenize, cache atomically."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from nnsight.testing import tiny_models
from nnsight.testing._cache import MARKER, build_once

TEXTS = [
    "The capital of France is Paris",
    "Hello world",
    "The Eiffel Tower is in",
    "  Zürich, naïve café 🤖\tand\nnew lines  ",
    "Madison Square Garden is located in the city of",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def built(request, cache):
    path = tiny_models.BUILDERS[request.param](cache)
    return request.param, path


@pytest.fixture(scope="module")
def loaded(built):
    arch, path = built
    return arch, AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def test_loads_by_path_like_a_hub_name(built, loaded):
    arch, path = built
    _, model, tok = loaded
    expected = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}[arch]
    assert type(model).__name__ == expected
    assert Path(path).parent.name.startswith("tiny-models")
    assert (Path(path) / "model.safetensors").is_file()
    assert model.config.vocab_size == len(tok) == tiny_models.VOCAB_SIZE
    assert sum(p.numel() for p in model.parameters()) < 500_000
    gen = model.generation_config
    assert (gen.bos_token_id, gen.eos_token_id, gen.pad_token_id) == (0, 0, 0)


def test_configs(loaded):
    arch, model, _ = loaded
    cfg = model.config
    if arch == "gpt2":
        assert (cfg.n_layer, cfg.n_embd, cfg.n_head) == (4, 64, 2)
        assert len(model.transformer.h) == 4
    else:
        assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (2, 64, 2)
        assert cfg.num_key_value_heads == 1 and cfg.head_dim == 32
        assert len(model.model.layers) == 2


def test_forward_logits_shape(loaded):
    _, model, tok = loaded
    batch = tok(TEXTS[:2], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, batch.input_ids.shape[1], len(tok))
    assert torch.isfinite(logits).all()


def test_tokenizer_round_trip(loaded):
    arch, _, tok = loaded
    for text in TEXTS:
        ids = tok(text).input_ids
        if arch == "gpt2":
            assert tok.decode(ids) == text
        else:  # Llama style: bos prepended
            assert ids[0] == tok.bos_token_id
            assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.pad_token == tok.eos_token == tok.bos_token == "<|endoftext|>"


def test_corpus_words_are_single_tokens(loaded):
    _, _, tok = loaded
    for word in [" Paris", " France", " capital", "Hello", " world"]:
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word


def test_left_padding(loaded):
    arch, model, tok = loaded
    tok.padding_side = "left"
    try:
        short, long = "Hello world", "The Eiffel Tower is in"
        batch = tok([short, long], return_tensors="pt", padding=True)
    finally:
        tok.padding_side = "right"
    alone = tok(short).input_ids
    width = batch.input_ids.shape[1]
    n_pad = width - len(alone)
    assert n_pad > 0
    assert batch.input_ids[0].tolist() == [tok.pad_token_id] * n_pad + alone
    assert batch.attention_mask[0].tolist() == [0] * n_pad + [1] * len(alone)
    assert batch.attention_mask[1].all()
    out = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape == (2, width + 3)


def test_second_build_is_a_noop(built, cache):
    arch, path = built
    weights = Path(path) / "model.safetensors"
    before = weights.stat().st_mtime_ns
    start = time.perf_counter()
    again = tiny_models.BUILDERS[arch](cache)
    assert time.perf_counter() - start < 0.1
    assert again == path
    assert weights.stat().st_mtime_ns == before
    assert [p.name for p in Path(cache).iterdir() if p.name.startswith(".")] == []  # no temp dirs left


def test_weights_are_deterministic(built, tmp_path):
    arch, path = built
    other = tiny_models.BUILDERS[arch](tmp_path)
    assert Path(other).name == Path(path).name
    a = AutoModelForCausalLM.from_pretrained(path).state_dict()
    b = AutoModelForCausalLM.from_pretrained(other).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv(tiny_models.ENV_VAR, str(tmp_path / "env"))
    assert tiny_models.cache_root() == tmp_path / "env"
    assert tiny_models.cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv(tiny_models.ENV_VAR)
    assert tiny_models.cache_root() == tiny_models.DEFAULT_CACHE


def test_directory_name_tracks_parameters(tmp_path):
    base = tiny_models._model_dir(tmp_path, "gpt2", {"n_layer": 4})
    assert base == tiny_models._model_dir(tmp_path, "gpt2", {"n_layer": 4})
    assert base != tiny_models._model_dir(tmp_path, "gpt2", {"n_layer": 3})


def test_failed_build_leaves_nothing(tmp_path):
    final = tmp_path / "model"

    def broken(directory):
        (directory / "half.bin").write_bytes(b"x")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        build_once(final, broken)
    assert list(tmp_path.iterdir()) == []


def test_incomplete_or_stale_directory_is_rebuilt(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "half.bin").write_bytes(b"x")  # no marker: an interrupted foreign build
    calls = []

    def build(directory):
        calls.append(directory)
        (directory / "weights").write_text("ok")

    assert build_once(final, build, stamp="v1") == str(final)
    assert sorted(p.name for p in final.iterdir()) == [MARKER, "weights"]
    build_once(final, build, stamp="v1")
    assert len(calls) == 1
    build_once(final, build, stamp="v2")  # stamp changed: rebuilt
    assert len(calls) == 2 and (final / MARKER).read_text() == "v2"


def test_cli_prints_paths(cache):
    expected = [f"{name}: {build(cache)}" for name, build in tiny_models.BUILDERS.items()]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "nnsight.testing.tiny_models", "--cache-dir", str(cache)],
        capture_output=True, text=True, check=True, env=env,
    ).stdout
    assert out.splitlines() == expected
