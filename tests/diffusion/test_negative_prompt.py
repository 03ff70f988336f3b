"""`negative_prompt` per invoke and per trace, against plain diffusers with the same
seed and the same per-prompt negative prompts (a list matching the prompts)."""
import numpy as np
import pytest
import torch

from diffusion_utils import reference

PROMPTS = ["A cat on a mat", "A dog in the snow"]
STEPS = 3


def pixels(image):
    return np.asarray(image, dtype=np.int16)


def same_images(mine, theirs):
    assert len(mine) == len(theirs)
    for a, b in zip(mine, theirs):
        assert np.array_equal(pixels(a), pixels(b))


def test_each_invoke_brings_its_own_negative_prompt(sd, plain):
    with sd.generate(num_inference_steps=STEPS, seed=0) as tracer:
        with tracer.invoke(PROMPTS[0], negative_prompt="blurry"):
            first = list().save()
            for step in tracer.iter[:]:
                first.append(sd.unet.output.clone())
            result0 = tracer.result.save()
        with tracer.invoke(PROMPTS[1], negative_prompt="dark, low quality"):
            result1 = tracer.result.save()
    ref, preds = reference(plain, PROMPTS, STEPS, seed=0, negative_prompt=["blurry", "dark, low quality"])
    same_images(tracer.result.images, ref.images)
    same_images(result0.images, ref.images[:1])
    same_images(result1.images, ref.images[1:])
    for mine, theirs in zip(first, preds):  # the invoke's [uncond (its negative), cond] rows
        assert torch.allclose(mine, theirs[[0, 2]], atol=1e-6)
    plain_ref, _ = reference(plain, PROMPTS, STEPS, seed=0)  # the negatives mattered
    assert not np.array_equal(pixels(ref.images[0]), pixels(plain_ref.images[0]))


def test_trace_negative_prompt_is_the_default_of_every_invoke(sd, plain):
    with sd.generate(num_inference_steps=STEPS, seed=0, negative_prompt="blurry") as tracer:
        with tracer.invoke(PROMPTS[0]):
            pass
        with tracer.invoke(PROMPTS[1], negative_prompt="dark"):  # its own wins
            pass
    ref, _ = reference(plain, PROMPTS, STEPS, seed=0, negative_prompt=["blurry", "dark"])
    same_images(tracer.result.images, ref.images)


def test_trace_input_with_negative_prompt(sd, plain):
    # a string prompt becomes a one-entry list: the negative prompt must be one too for diffusers
    with sd.generate(PROMPTS[0], num_inference_steps=STEPS, seed=0, negative_prompt="blurry") as tracer:
        pass
    ref, _ = reference(plain, PROMPTS[0], STEPS, seed=0, negative_prompt="blurry")
    same_images(tracer.result.images, ref.images)
    out = sd.generate(PROMPTS[0], num_inference_steps=STEPS, seed=0, negative_prompt="blurry")  # no tracing
    same_images(out.images, ref.images)


def test_invoke_without_negative_prompt_gets_the_pipeline_default(sd, plain):
    with sd.generate(num_inference_steps=STEPS, seed=0) as tracer:
        with tracer.invoke(PROMPTS, negative_prompt=["blurry", None]):  # a list: one per prompt
            pass
        with tracer.invoke("A bird"):
            pass
    prompts = PROMPTS + ["A bird"]
    ref, _ = reference(plain, prompts, STEPS, seed=0, negative_prompt=["blurry", "", ""])
    same_images(tracer.result.images, ref.images)
    alone, _ = reference(plain, prompts, STEPS, seed=0)  # "" is Stable Diffusion's own default
    same_images(tracer.result.images[1:], alone.images[1:])


def test_negative_prompt_mistakes_are_reported(sd):
    with pytest.raises(ValueError, match="2 entries for 1 prompt"):
        with sd.generate(num_inference_steps=1, seed=0) as tracer:
            with tracer.invoke(PROMPTS[0], negative_prompt=["a", "b"]):
                pass
    with pytest.raises(TypeError, match="goes with the prompts"):
        with sd.generate(num_inference_steps=1, seed=0) as tracer:
            with tracer.invoke(PROMPTS[0]):
                pass
            with tracer.invoke(negative_prompt="blurry"):
                pass
