"""A tiny Stable Diffusion pipeline built offline, cached on disk, loaded by path.

    path = build_stable_diffusion()
    pipe = diffusers.DiffusionPipeline.from_pretrained(path)    # exactly like a hub name
    model = DiffusionModel(path)

The pipeline is a real ``StableDiffusionPipeline``: a ``UNet2DConditionModel`` (channels 32/64,
cross-attention), an ``AutoencoderKL`` (scale factor 2), a 2-layer ``CLIPTextModel`` with a
character-level CLIP tokenizer (32 positions), a ``DDIMScheduler``, no safety checker. Images are
32x32 (16x16 latents), so a 50-step generation takes a fraction of a second on one CPU thread.
Weights are deterministic (``torch.manual_seed(0)``).

It lives next to the tiny language models (``nnsight.testing.tiny_models.cache_root``) in
``<cache>/sd-<hash>``, built into a temporary directory and renamed into place.

    python -m nnsight.testing.tiny_diffusion [--cache-dir DIR]     # builds if needed, prints the path
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
from pathlib import Path

from ._cache import build_once
from .tiny_models import _model_dir, cache_root

# Bump when the recipe or the saved layout changes: the pipeline rebuilds.
RECIPE_VERSION = 1
MAX_TEXT_LENGTH = 32  # tokenizer model_max_length == text encoder positions

UNET_CONFIG = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(32, 64),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=32,
)
VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(32, 64),
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    latent_channels=4,
    layers_per_block=1,
    norm_num_groups=32,
    sample_size=32,
)
TEXT_CONFIG = dict(
    hidden_size=32,
    intermediate_size=64,
    num_attention_heads=4,
    num_hidden_layers=2,
    max_position_embeddings=MAX_TEXT_LENGTH,
    layer_norm_eps=1e-5,
)
SCHEDULER_CONFIG = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)


def clip_tokenizer():
    """A CLIP tokenizer over single characters (byte-level alphabet, word-end variants, no merges)."""
    from transformers import CLIPTokenizer

    # CLIP's byte <-> printable-unicode table (the same one GPT-2 uses).
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    alphabet = [chr(c) for c in cs]
    tokens = ["<|startoftext|>", "<|endoftext|>"] + alphabet + [a + "</w>" for a in alphabet]
    vocab = {t: i for i, t in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=MAX_TEXT_LENGTH)


def build_stable_diffusion(cache_dir: str | os.PathLike | None = None) -> str:
    """Build (once) the tiny Stable Diffusion pipeline; return its directory."""
    params = {
        "recipe_sd": RECIPE_VERSION,
        "diffusers": importlib.metadata.version("diffusers").split(".")[0],
        "unet": UNET_CONFIG, "vae": VAE_CONFIG, "text": TEXT_CONFIG, "scheduler": SCHEDULER_CONFIG,
    }

    def build(directory: Path) -> None:
        import torch
        from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        tokenizer = clip_tokenizer()
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**UNET_CONFIG)
        vae = AutoencoderKL(**VAE_CONFIG)
        text_config = CLIPTextConfig(
            vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **TEXT_CONFIG)
        text_encoder = CLIPTextModel(text_config)
        pipe = StableDiffusionPipeline(
            vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=tokenizer, unet=unet.eval(),
            scheduler=DDIMScheduler(**SCHEDULER_CONFIG), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
        pipe.save_pretrained(str(directory))  # safetensors

    return build_once(_model_dir(cache_root(cache_dir), "sd", params), build)


BUILDERS = {"stable_diffusion": build_stable_diffusion}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nnsight.testing.tiny_diffusion",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--cache-dir", help="default: the tiny models' cache (nnsight.testing.tiny_models)")
    args = parser.parse_args(argv)
    for name, build in BUILDERS.items():
        print(f"{name}: {build(args.cache_dir)}")


if __name__ == "__main__":
    main()
