"""Offline tiny GPT-2 for the benchmarks (no hub access needed).

`gpt2_path()` returns a directory loadable with `from_pretrained` / `nnsight.LanguageModel`:
  1. the repo's own builder `nnsight/testing/tiny_models.py:build_gpt2()` when that file exists
     and works -- loaded *by file path*, never through the installed `nnsight` package, so the
     peer's interpreter can use it too;
  2. otherwise the fallback below: GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab ~1000),
     seeded random weights, and a byte-level BPE tokenizer trained locally with `tokenizers`.

The fallback is cached under $NNSIGHT_BENCH_CACHE (default ~/.cache/nnsight-bench) and built
atomically, so the first interpreter that asks builds it and every other one (ours, the peer)
loads the very same weights.

CLI: `python benchmarks/tiny_gpt2.py` prints the path (building it if needed).
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPO_BUILDER = REPO / "nnsight" / "testing" / "tiny_models.py"
CACHE = Path(os.environ.get("NNSIGHT_BENCH_CACHE", Path.home() / ".cache" / "nnsight-bench"))
FALLBACK_VERSION = "2"

_WORDS = (
    "the a an of to in on at by for with from into over under model layer token hidden state "
    "attention head neuron output input save trace invoke patch graph tensor value weight bias "
    "cat dog bird fish tree river mountain city house road car train boat plane sun moon star "
    "red green blue black white small large quick slow happy sad bright dark old new first last "
    "one two three four five six seven eight nine ten and or but not is was are were be been"
).split()


def _corpus(n_lines: int = 4000):
    import random

    rng = random.Random(0)
    for _ in range(n_lines):
        yield " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 16))) + "."


def build_fallback(dest: Path | None = None) -> str:
    """Build (once) the fallback tiny GPT-2 and return its directory."""
    dest = Path(dest) if dest else CACHE / f"tiny-gpt2-v{FALLBACK_VERSION}"
    if (dest / "config.json").exists() and (dest / ".complete").exists():
        return str(dest)
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    eos = tok.token_to_id("<|endoftext|>")
    config = GPT2Config(
        vocab_size=tok.get_vocab_size(),
        n_positions=128,
        n_embd=64,
        n_layer=2,
        n_head=2,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        # Wider init than GPT-2's 0.02 so greedy decoding of the benchmark prompt yields ten
        # varied tokens (0.02 repeats one token; 0.05-0.1 emit EOS at once).
        initializer_range=0.3,
    )
    torch.manual_seed(0)
    return save_complete(GPT2LMHeadModel(config).eval(), hf_tok, dest)


def save_complete(model, tokenizer, dest: Path) -> str:
    """Save ``model`` and ``tokenizer`` to ``dest`` atomically (a temp folder renamed, marked
    ``.complete``), so concurrent builders and interrupted runs never leave a half-written model."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / ".complete").write_text("ok\n")
        try:
            os.rename(tmp, dest)
        except OSError:  # another process won the race
            pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(dest)


def _repo_builder():
    """The repo's build_gpt2, loaded by file path (or None if absent / not importable)."""
    if not REPO_BUILDER.exists():
        return None
    try:
        # A synthetic package over nnsight/testing/ (never the installed `nnsight`), so the
        # builder's sibling relative imports (`from ._cache import ...`) resolve.
        import types

        pkg_name = "_bench_nnsight_testing"
        if pkg_name not in sys.modules:
            pkg = types.ModuleType(pkg_name)
            pkg.__path__ = [str(REPO_BUILDER.parent)]
            sys.modules[pkg_name] = pkg
        name = pkg_name + ".tiny_models"
        spec = importlib.util.spec_from_file_location(name, REPO_BUILDER)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        return getattr(mod, "build_gpt2", None)
    except Exception as exc:  # e.g. it imports from our nnsight package
        print(f"tiny_gpt2: repo builder unusable ({type(exc).__name__}: {exc}); using fallback",
              file=sys.stderr)
        return None


def gpt2_path() -> str:
    """Directory of the tiny GPT-2; $NNSIGHT_BENCH_GPT2 overrides everything."""
    env = os.environ.get("NNSIGHT_BENCH_GPT2")
    if env:
        return env
    if os.environ.get("NNSIGHT_BENCH_FALLBACK_GPT2") != "1":
        build = _repo_builder()
        if build is not None:
            try:
                params = inspect.signature(build).parameters
                required = [p for p in params.values()
                            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
                path = build(str(CACHE / "repo-gpt2")) if required else build()
                if path and (Path(path) / "config.json").exists():
                    return str(path)
            except Exception as exc:
                print(f"tiny_gpt2: repo build_gpt2() failed ({type(exc).__name__}: {exc}); "
                      "using fallback", file=sys.stderr)
    return build_fallback()


def fingerprint(path: str) -> str:
    """Short hash of the weights file(s), to check both interpreters load the same model."""
    h = hashlib.sha256()
    for f in sorted(Path(path).glob("*.safetensors")) + sorted(Path(path).glob("*.bin")):
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


if __name__ == "__main__":
    p = gpt2_path()
    print(p)
